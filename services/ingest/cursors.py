"""Cursors are Redis stream entry ids; a malformed one must be a 422, not a Redis error (500)."""

from __future__ import annotations

import re

_CURSOR_RE = re.compile(r"^\d{1,20}-\d{1,20}$")


def valid_cursor(cursor: str) -> bool:
    """A stream entry id `ms-seq`, each part below 2**64 as Redis requires."""
    if not _CURSOR_RE.match(cursor):
        return False
    ms, seq = cursor.split("-")
    return int(ms) < 2**64 and int(seq) < 2**64 - 1
