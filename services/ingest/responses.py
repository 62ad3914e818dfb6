"""JSON responses encoded by msgspec: routes return Structs, never pydantic models."""

from __future__ import annotations

import msgspec
from fastapi.responses import Response

_encoder = msgspec.json.Encoder()


def as_json(obj, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")
