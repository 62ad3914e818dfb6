"""Identifiers: time-ordered, URL-safe, unguessable."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _b32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_job_id() -> str:
    """`job_` + 48-bit millisecond time + 80 random bits, so ids sort by creation time."""
    ms = int(time.time() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    return "job_" + _b32((ms << 80) | rand, 26)


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
