"""Identifiers: time-ordered, URL-safe, unguessable."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _b32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


_RAND_BITS = 80
_STEP_BITS = 40  # an id made in the same millisecond as the last one adds 1..2^40 to its random part
_last = (0, 0)  # (ms, random part) of this process's last id
_lock = threading.Lock()


def new_job_id() -> str:
    """`job_` + 48-bit millisecond time + 80 random bits, so ids sort by creation time. Within one
    process they sort in creation order even inside a millisecond (or when the clock steps back):
    such an id keeps the last one's time and adds a random step to its random part."""
    global _last
    ms = int(time.time() * 1000) & ((1 << 48) - 1)
    with _lock:
        last_ms, last_rand = _last
        if ms > last_ms:
            rand = int.from_bytes(os.urandom(_RAND_BITS // 8), "big")
        else:
            ms = last_ms
            rand = last_rand + 1 + int.from_bytes(os.urandom(_STEP_BITS // 8), "big")
            if rand >= 1 << _RAND_BITS:  # this millisecond is used up: borrow the next one
                ms, rand = ms + 1, int.from_bytes(os.urandom(_RAND_BITS // 8), "big")
        _last = (ms, rand)
    return "job_" + _b32((ms << _RAND_BITS) | rand, 26)


def created_ms(ident: str) -> int:
    """The creation time (ms) inside a time-ordered id (`job_`, `file-`, `batch_`, `wh_` + 26 chars)."""
    value = 0
    for char in ident[-26:]:
        value = value * 32 + _ALPHABET.index(char)
    return value >> 80


def request_id(job_id: str, index: int) -> str:
    """Unique because the job id is; cheap to make 50,000 of."""
    return f"req_{job_id[4:]}_{index}"


def new_file_id() -> str:
    """`file-` + the same time-ordered random id as jobs."""
    return "file-" + new_job_id()[4:]


def new_webhook_id() -> str:
    return "wh_" + new_job_id()[4:]


def delivery_id(event_id: str, endpoint_id: str) -> str:
    """Derived, not random: an event redelivered to the fan-out (after a crash) maps to the same
    delivery, and receivers see the same webhook-id on every attempt."""
    import hashlib

    return "msg_" + hashlib.sha256(f"{event_id}\n{endpoint_id}".encode()).hexdigest()[:26]
