"""The stack's services listen on ports picked before they start: a pick must be one that an
outgoing connection (which takes a port from the kernel's ephemeral range) cannot take first."""

from __future__ import annotations

import socket

from inferq.localstack import _ephemeral_low, free_port


def test_free_ports_lie_below_the_ephemeral_range_and_can_be_bound():
    low = _ephemeral_low()
    ports = {free_port() for _ in range(50)}
    assert all(1024 <= p < low for p in ports)
    for port in list(ports)[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_picked():
    low = _ephemeral_low()
    held = []
    try:
        for port in range(max(1024, low - 12_000), max(1024, low - 12_000) + 200):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                s.listen()
            except OSError:
                s.close()
                continue
            held.append(s)
        taken = {s.getsockname()[1] for s in held}
        assert not taken & {free_port() for _ in range(300)}
    finally:
        for s in held:
            s.close()
