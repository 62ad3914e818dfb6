"""What a contract may ask for: checked at submission, so a job the engines cannot hold to its
shape is refused before anything of it is written.

A JSON schema must be valid (Draft 2020-12, checked by the `jsonschema` library), at most
MAX_SCHEMA_BYTES encoded, at most MAX_DEPTH levels deep, and use only the keywords below: the ones
xgrammar (the grammar backend of the vllm and transformers engines) turns into a grammar. The
worker validates every result against the whole schema anyway, so a keyword the grammar enforces
only loosely (a string's `maxLength`) still cannot let an invalid result through as succeeded."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from shared.wire.contract import Contract

MAX_SCHEMA_BYTES = 16_384
MAX_DEPTH = 16
MAX_CHOICES_BYTES = 16_384

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated"}
# keyword -> how its value holds subschemas: "one" (a schema), "map" (name -> schema), "list"
SUBSCHEMAS = {
    "properties": "map",
    "$defs": "map",
    "definitions": "map",
    "items": "one",
    "additionalProperties": "one",
    "prefixItems": "list",
    "anyOf": "list",
}
PLAIN = {
    "type",
    "enum",
    "const",
    "required",
    "$ref",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minProperties",
    "maxProperties",
}
ALLOWED = ANNOTATIONS | set(SUBSCHEMAS) | PLAIN
FORMATS = {
    "email",
    "date",
    "time",
    "date-time",
    "duration",
    "ipv4",
    "ipv6",
    "hostname",
    "uuid",
    "uri",
    "uri-reference",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
}
# regex features a grammar cannot express (they look around or back)
_UNSUPPORTED_REGEX = re.compile(r"\(\?[=!<]|\(\?P[<=>]|\\[1-9]|\\[bB]")


class ContractRefused(Exception):
    """A response_format the service will not accept; `path` is where in it
    (e.g. `json_schema.schema.properties.tags`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def check(contract: Contract) -> None:
    """Raise ContractRefused naming the place in the response_format that cannot be served."""
    if contract.kind == "json_schema":
        _check_schema(contract.schema or {})
    elif contract.kind == "regex":
        _check_regex(contract.pattern or "")
    elif contract.kind == "choice":
        _check_choices(contract.choices or [])


def _check_schema(schema: dict[str, Any]) -> None:
    size = len(msgspec.json.encode(schema))
    if size > MAX_SCHEMA_BYTES:
        raise ContractRefused(
            "json_schema.schema", f"the schema is {size} bytes encoded, more than the limit of {MAX_SCHEMA_BYTES}"
        )
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise ContractRefused(
            "json_schema.schema" + (f".{where}" if where else ""), f"not a valid JSON Schema: {exc.message}"
        ) from None
    _walk(schema, "json_schema.schema", 0)


def _walk(node: Any, path: str, depth: int) -> None:
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise ContractRefused(path, "a schema must be an object or a boolean")
    if depth > MAX_DEPTH:
        raise ContractRefused(path, f"the schema nests deeper than {MAX_DEPTH} levels")
    for key, value in node.items():
        if key not in ALLOWED:
            raise ContractRefused(
                f"{path}.{key}",
                f"keyword {key!r} cannot be enforced while decoding; supported: {', '.join(sorted(ALLOWED))}",
            )
        kind = SUBSCHEMAS.get(key)
        if kind == "one":
            _walk(value, f"{path}.{key}", depth + 1)
        elif kind == "map":
            for name, sub in value.items():
                _walk(sub, f"{path}.{key}.{name}", depth + 1)
        elif kind == "list":
            for i, sub in enumerate(value):
                _walk(sub, f"{path}.{key}[{i}]", depth + 1)
    _check_combinations(node, path)


def _check_combinations(node: dict[str, Any], path: str) -> None:
    fmt = node.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise ContractRefused(
            f"{path}.format", f"format {fmt!r} cannot be enforced; supported: {', '.join(sorted(FORMATS))}"
        )
    if ("pattern" in node or "format" in node) and ("minLength" in node or "maxLength" in node):
        raise ContractRefused(
            f"{path}.{'pattern' if 'pattern' in node else 'format'}",
            "a string with a pattern or format cannot also bound its length (minLength/maxLength)",
        )
    ref = node.get("$ref")
    if ref is not None and not (ref.startswith("#/$defs/") or ref.startswith("#/definitions/") or ref == "#"):
        raise ContractRefused(
            f"{path}.$ref", f"only references within the schema (#/$defs/...) are supported, not {ref!r}"
        )
    if "pattern" in node:
        _check_regex(node["pattern"], f"{path}.pattern")


def _check_regex(pattern: str, path: str = "pattern") -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ContractRefused(path, f"not a valid regular expression: {exc}") from None
    found = _UNSUPPORTED_REGEX.search(pattern)
    if found:
        raise ContractRefused(
            path,
            f"{found.group(0)!r}: lookarounds, backreferences and word boundaries cannot be enforced while decoding",
        )


def _check_choices(choices: list[str]) -> None:
    seen: set[str] = set()
    for i, choice in enumerate(choices):
        if choice in seen:
            raise ContractRefused(f"choices[{i}]", f"duplicate choice {choice!r}")
        seen.add(choice)
    size = sum(len(c.encode()) for c in choices)
    if size > MAX_CHOICES_BYTES:
        raise ContractRefused("choices", f"the choices are {size} bytes, more than the limit of {MAX_CHOICES_BYTES}")
