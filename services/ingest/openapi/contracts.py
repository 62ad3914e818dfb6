"""`response_format` in the document: which kinds each model takes (the others only free text, and a
job's format of another kind only when each of their requests sets one of its own that they take), and what a JSON
schema in one may use (a recursive schema of the keywords services/ingest/contract_check.py
allows). What no document can state is said in the descriptions: the regex dialect, a schema's
size in bytes, that its references resolve and its bounds leave a value."""

from __future__ import annotations

from typing import Any

from services.ingest.contract_check import ALLOWED, FORMATS, MAX_DEPTH, MAX_SCHEMA_BYTES
from shared.catalog.fallback import contract_kinds
from shared.catalog.models import ALL_CONTRACT_KINDS, ModelsConfig

_REF = "#/components/schemas/"
_SPECS = ("RequestSpec", "PromptSpec")
_TYPES = ["object", "array", "string", "integer", "number", "boolean", "null"]


_FORMATS = {
    "text": "TextFormat",
    "json_object": "JsonObjectFormat",
    "json_schema": "JsonSchemaFormat",
    "regex": "RegexFormat",
    "choice": "ChoiceFormat",
}


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
    groups: dict[frozenset[str], list[str]] = {}  # the kinds a model takes -> the models
    for name in models.names():
        groups.setdefault(contract_kinds(models, name), []).append(name)
    for kinds, names in groups.items():
        if kinds != ALL_CONTRACT_KINDS:
            _only(schemas, names, kinds)


def _refs(kinds) -> list[dict[str, str]]:
    return [{"$ref": _REF + _FORMATS[kind]} for kind in sorted(kinds)]


def _only(schemas: dict[str, Any], names: list[str], kinds: frozenset[str]) -> None:
    """Requests for `names` take only `kinds` (and free text); a job's format of another kind
    only when each of their requests sets a format of its own that they take."""
    on_these = {"if": {"properties": {"model": {"enum": names}}, "required": ["model"]}}
    taken = _refs(kinds | {"text"})
    for name in _SPECS:
        if name in schemas:
            then = {"properties": {"response_format": {"anyOf": [{"type": "null"}, *taken]}}}
            schemas[name].setdefault("allOf", []).append({**on_these, "then": then})
    job = schemas.get("JobCreate")
    if job is not None:
        own = {
            **on_these,
            "then": {"required": ["response_format"], "properties": {"response_format": {"anyOf": taken}}},
        }
        items = {"anyOf": [{"type": "null"}, {"type": "array", "items": own}]}
        refused = {
            "required": ["response_format"],
            "properties": {"response_format": {"anyOf": _refs(ALL_CONTRACT_KINDS - kinds)}},
        }
        job.setdefault("allOf", []).append(
            {"if": refused, "then": {"properties": {"requests": items, "prompts": items}}}
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
