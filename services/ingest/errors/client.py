"""Client errors with a message that names the field (and request index) at fault."""

from __future__ import annotations

import re

import msgspec
from fastapi import Request
from fastapi.responses import Response

from shared.wire.api import ApiError, ApiErrorBody

_encoder = msgspec.json.Encoder()
_INDEX_RE = re.compile(r"^(?:requests|prompts)\[(\d+)\]")


class ApiException(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        field: str | None = None,
        index: int | None = None,
        known_models: list[str] | None = None,
        model: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ApiErrorBody(
            message=message, type=type, field=field, index=index, model=model, known_models=known_models
        )
        self.headers = headers


def error_response(status: int, body: ApiErrorBody, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encoder.encode(ApiError(error=body)), status_code=status, media_type="application/json", headers=headers
    )


async def handle_api_exception(_: Request, exc: ApiException) -> Response:
    return error_response(exc.status, exc.body, exc.headers)


# a value that does not match its pattern: the pattern itself (some are long) is in the document
PATTERN_MISMATCH = re.compile(r"(?:Expected `str` matching regex|String should match pattern) '.*'$", re.S)
MALFORMED = "malformed (it does not match the format the API document gives for it)"


def from_validation_error(exc: msgspec.ValidationError) -> ApiException:
    """Turn msgspec's `Expected `int` >= 1 - at `$.requests[3].max_tokens`` into a field path
    (`requests[3].max_tokens`) and index (3) a client can act on."""
    text = str(exc)
    msg, sep, path = text.rpartition(" - at `")
    if not sep:
        return ApiException(422, text)
    field = path.rstrip("`").removeprefix("$").removeprefix(".")
    msg = PATTERN_MISMATCH.sub(MALFORMED, msg)
    named = re.search(r"(?:unknown|missing required) field `([^`]+)`", msg)
    if named:
        field = f"{field}.{named.group(1)}" if field else named.group(1)
    m = _INDEX_RE.match(field)
    index = int(m.group(1)) if m else None
    return ApiException(422, f"{field}: {msg}", field=field or None, index=index)


def decode_body(decoder: msgspec.json.Decoder, body: bytes):
    """A request body as its Struct, or 400 (not JSON) / 422 (naming the field at fault)."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        if "got `float`" not in str(exc):
            raise from_validation_error(exc) from None
    except msgspec.DecodeError as exc:
        raise ApiException(400, f"malformed JSON: {exc}", field="body") from None
    except RecursionError:
        raise too_deep() from None
    # JSON Schema's `integer` (the document's) includes 2.0; decoding does not, so such a body is
    # decoded again with every integral float read as an int (a float field takes an int too)
    try:
        return msgspec.convert(_integral(msgspec.json.decode(body)), decoder.type)
    except msgspec.ValidationError as exc:
        raise from_validation_error(exc) from None
    except RecursionError:
        raise too_deep() from None


def too_deep() -> ApiException:
    """A body whose objects and arrays nest deeper than the decoder follows (thousands of levels)."""
    return ApiException(400, "the body's JSON nests too deeply to read", field="body")


def _integral(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


def over_capacity(exc, retry_after_s: int) -> ApiException:
    where = f"model {exc.model!r}" if exc.model else "all models together"
    return ApiException(
        429,
        f"over capacity: {where} already has {exc.current} accepted, unfinished requests and this job would pass "
        f"the limit of {exc.limit}; nothing was written, retry after {retry_after_s}s",
        type="over_capacity",
        model=exc.model,
        headers={"Retry-After": str(retry_after_s)},
    )


def replayed_job_expired(job_id: str) -> ApiException:
    """409 for an Idempotency-Key whose job has expired: no job to return, and a new one under the
    same key would not be the job the key promised."""
    return ApiException(
        409,
        f"Idempotency-Key: the job this Idempotency-Key created, {job_id}, has expired; use a new key",
        type="idempotency_key_expired_job",
        field="Idempotency-Key",
    )


def quota_exceeded(status: int, quota: str, limit: int, used: int, message: str, field: str) -> ApiException:
    """413 (this alone is over the quota) or 429 (the quota is used up): names the quota's setting,
    its limit and the usage; retrying helps only once something is deleted or expires."""
    exc = ApiException(status, message, type="quota_exceeded", field=field)
    exc.body.quota, exc.body.limit, exc.body.used = quota, limit, used
    return exc
