"""Cursors are Redis stream entry ids; a malformed one must be a 422, not a Redis error (500)."""

from __future__ import annotations

import re

from services.ingest import patterns

_CURSOR_RE = re.compile(patterns.STREAM_ID)


def valid_cursor(cursor: str) -> bool:
    """A stream entry id `ms-seq` in the form services/ingest/patterns.py publishes (each part below 2**64)."""
    return _CURSOR_RE.fullmatch(cursor) is not None
