"""`response_format` in the document: which models take a contract (the others only free text, and
a job's contract only when each of their requests sets free text of its own), and what a JSON
schema in one may use (a recursive schema of the keywords services/ingest/contract_check.py
allows). What no document can state is said in the descriptions: the regex dialect, a schema's
size in bytes, that its references resolve and its bounds leave a value."""

from __future__ import annotations

from typing import Any

from services.ingest.contract_check import ALLOWED, FORMATS, MAX_DEPTH, MAX_SCHEMA_BYTES
from shared.catalog.fallback import cannot_enforce_contracts
from shared.catalog.models import ModelsConfig

_REF = "#/components/schemas/"
_TEXT = {"$ref": _REF + "TextFormat"}
_FREE = {"anyOf": [{"type": "null"}, _TEXT]}
_SPECS = ("RequestSpec", "PromptSpec")
_TYPES = ["object", "array", "string", "integer", "number", "boolean", "null"]


def apply(schemas: dict[str, Any], models: ModelsConfig) -> None:
    schemas["ContractSchema"] = contract_schema()
    spec = schemas.get("JsonSchemaSpec", {}).get("properties", {})
    if "schema" in spec:
        spec["schema"] = {"type": "object", "allOf": [{"$ref": _REF + "ContractSchema"}]}
    choices = schemas.get("ChoiceFormat", {}).get("properties", {}).get("choices")
    if choices is not None:
        choices["uniqueItems"] = True
        choices["description"] = "distinct; 16 KiB at most in all (UTF-8)"
    pattern = schemas.get("RegexFormat", {}).get("properties", {}).get("pattern")
    if pattern is not None:
        pattern["description"] = _REGEX
    cannot = [name for name in models.names() if cannot_enforce_contracts(models, name) is not None]
    if not cannot:
        return
    only_text = {"if": {"properties": {"model": {"enum": cannot}}, "required": ["model"]}}
    for name in _SPECS:
        if name in schemas:
            schemas[name].setdefault("allOf", []).append(
                {**only_text, "then": {"properties": {"response_format": _FREE}}}
            )
    job = schemas.get("JobCreate")
    if job is not None:
        own_text = {**only_text, "then": {"required": ["response_format"], "properties": {"response_format": _TEXT}}}
        items = {"anyOf": [{"type": "null"}, {"type": "array", "items": own_text}]}
        contracted = {"required": ["response_format"], "properties": {"response_format": {"not": _FREE}}}
        job.setdefault("allOf", []).append(
            {"if": contracted, "then": {"properties": {"requests": items, "prompts": items}}}
        )


_REGEX = (
    "the whole output matches it (^ and $ are implied); Python's syntax without lookarounds,"
    " backreferences, word boundaries, (? groups other than (?:, possessive quantifiers or braces"
    " other than {m}, {m,} and {m,n}"
)


def contract_schema() -> dict[str, Any]:
    """A JSON Schema of the JSON Schemas a contract may hold."""
    me = {"$ref": _REF + "ContractSchema"}
    count = {"type": "integer", "minimum": 0}
    named = {"type": "object", "additionalProperties": me}
    many = {"type": "array", "items": me}
    keywords: dict[str, Any] = {
        "type": {
            "anyOf": [
                {"enum": _TYPES},
                {"type": "array", "items": {"enum": _TYPES}, "minItems": 1, "uniqueItems": True},
            ]
        },
        "properties": named,
        "$defs": named,
        "definitions": named,
        "items": me,
        "additionalProperties": me,
        "prefixItems": {**many, "minItems": 1},
        "anyOf": {**many, "minItems": 1},
        "enum": {"type": "array", "minItems": 1},
        "required": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "$ref": {"type": "string", "pattern": "^#(/(\\$defs|definitions)/[^/~%]+)?$"},
        "format": {"enum": sorted(FORMATS)},
        "pattern": {"type": "string", "format": "regex", "description": _REGEX},
        **{k: {"type": "number"} for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")},
        **{k: count for k in ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")},
    }
    return {
        "title": "ContractSchema",
        "description": (
            f"A JSON Schema (Draft 2020-12) using only keywords a grammar enforces, at most {MAX_SCHEMA_BYTES}"
            f" bytes encoded and {MAX_DEPTH} levels deep; its $refs must resolve within it, its bounds must"
            " leave a value, and a string's pattern or format cannot be combined with a length bound"
        ),
        "anyOf": [
            {"type": "boolean"},
            {
                "type": "object",
                "propertyNames": {"enum": sorted(ALLOWED)},
                "properties": keywords,
                "not": {  # a grammar cannot bound the length of a string it also holds to a pattern
                    "anyOf": [{"required": [a, b]} for a in ("pattern", "format") for b in ("minLength", "maxLength")]
                },
            },
        ],
    }
