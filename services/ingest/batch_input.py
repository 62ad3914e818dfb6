"""Turn an OpenAI batch input file (JSONL) into a native job body, or into line-numbered errors,
as OpenAI reports them for a batch that fails validation."""

from __future__ import annotations

from typing import Any

import msgspec

from services.ingest.openai_batch import BatchError, InputLine
from shared.catalog.models import ModelsConfig
from shared.wire.api import RequestSpec

MAX_ERRORS = 100  # a file with thousands of bad lines gets the first hundred, as a list
_line_decoder = msgspec.json.Decoder(InputLine)
# Body fields with a native meaning; other OpenAI fields that do not change the output's meaning
# (user, store, metadata, logprobs off, ...) are accepted and ignored.
_UNSUPPORTED = {
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "best_of",
    "suffix",
    "echo",
}


def parse_batch_file(
    content: bytes, endpoint: str, models: ModelsConfig
) -> tuple[list[dict[str, Any]], list[int], list[BatchError]]:
    """(requests for POST /v1/jobs, the 1-based input line of each, errors). Blank lines are skipped."""
    requests: list[dict[str, Any]] = []
    line_of: list[int] = []
    errors: list[BatchError] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(content.split(b"\n"), start=1):
        if not raw.strip():
            continue
        if len(errors) >= MAX_ERRORS:
            break
        try:
            line = _line_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            errors.append(BatchError(code="invalid_request", line=number, message=f"line {number}: {_plain(exc)}"))
            continue
        except msgspec.DecodeError as exc:
            errors.append(
                BatchError(code="invalid_json_line", line=number, message=f"line {number}: not valid JSON ({exc})")
            )
            continue
        except RecursionError:
            errors.append(
                BatchError(code="invalid_json_line", line=number, message=f"line {number}: its JSON nests too deeply")
            )
            continue
        if line.url != endpoint:
            errors.append(
                BatchError(
                    code="invalid_url",
                    line=number,
                    param="url",
                    message=f"line {number}: url {line.url!r} does not match the batch's endpoint {endpoint!r}",
                )
            )
            continue
        if line.custom_id in seen:
            errors.append(
                BatchError(
                    code="duplicate_custom_id",
                    line=number,
                    param="custom_id",
                    message=f"line {number}: custom_id {line.custom_id!r} is also used on line {seen[line.custom_id]}",
                )
            )
            continue
        seen[line.custom_id] = number
        request, error = _request(number, line, endpoint, models)
        if error is not None:
            errors.append(error)
            continue
        requests.append(request)
        line_of.append(number)
    if not requests and not errors:
        errors.append(BatchError(code="empty_file", message="the input file has no requests"))
    return requests, line_of, errors


def _request(number: int, line: InputLine, endpoint: str, models: ModelsConfig) -> tuple[dict, BatchError | None]:
    body = line.body

    def fail(code: str, message: str, param: str | None = None):
        return {}, BatchError(code=code, line=number, param=param, message=f"line {number}: {message}")

    model = body.get("model")
    if not isinstance(model, str) or not model:
        return fail("missing_model", "body.model is required", "body.model")
    if models.get(model) is None:
        return fail(
            "model_not_found", f"unknown model {model!r}; known models: {', '.join(models.names())}", "body.model"
        )
    if body.get("stream"):
        return fail("unsupported_parameter", "body.stream is not supported in a batch", "body.stream")
    if body.get("n", 1) != 1:
        return fail("unsupported_parameter", "body.n: only one choice per request is supported", "body.n")
    for name in sorted(_UNSUPPORTED & body.keys()):
        return fail("unsupported_parameter", f"body.{name} is not supported", f"body.{name}")
    req: dict[str, Any] = {"custom_id": line.custom_id, "model": model}
    if endpoint == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return fail("invalid_request", "body.messages must be a list", "body.messages")
        converted = []
        for i, m in enumerate(messages):
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):  # content parts: text only
                if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                    return fail(
                        "unsupported_parameter",
                        f"body.messages[{i}].content: only text parts are supported",
                        f"body.messages[{i}].content",
                    )
                content = "".join(p.get("text", "") for p in content)
            converted.append({"role": m.get("role") if isinstance(m, dict) else None, "content": content})
        req["messages"] = converted
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return fail("invalid_request", "body.prompt must be a string (one prompt per line)", "body.prompt")
        req["prompt"] = prompt
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    for name, value in (
        ("max_tokens", max_tokens),
        ("temperature", body.get("temperature")),
        ("top_p", body.get("top_p")),
        ("stop", body.get("stop")),
        ("seed", body.get("seed")),
        ("response_format", body.get("response_format")),
    ):
        if value is not None:
            req[name] = value
    try:
        msgspec.convert(req, RequestSpec)
    except msgspec.ValidationError as exc:
        return fail("invalid_request", f"body: {_plain(exc)}", "body")
    return req, None


def _plain(exc: msgspec.ValidationError) -> str:
    msg, sep, path = str(exc).rpartition(" - at `")
    if not sep:
        return str(exc)
    field = path.rstrip("`").removeprefix("$").removeprefix(".")
    return f"{field}: {msg}" if field else msg
