"""contract_check.check: each way a contract is refused (with the path it names), and what passes."""

from __future__ import annotations

import pytest

from services.ingest.contract_check import (
    FORMATS,
    MAX_CHOICES_BYTES,
    MAX_DEPTH,
    MAX_SCHEMA_BYTES,
    ContractRefused,
    check,
)
from shared.wire.contract import Contract, contract_of
from shared.wire.formats import RegexFormat

S = "json_schema.schema"

REALISTIC = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Review",
    "type": "object",
    "properties": {
        "sentiment": {"enum": ["positive", "neutral", "negative"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 5},
        "author": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "email": {"type": "string", "format": "email"},
                "address": {"$ref": "#/$defs/address"},
            },
            "required": ["name"],
            "additionalProperties": False,
        },
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
        "published": {"type": "string", "format": "date"},
        "reply": {"anyOf": [{"type": "null"}, {"type": "string", "description": "the shop's answer"}]},
        "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
        "version": {"const": 2},
    },
    "required": ["sentiment", "score", "tags"],
    "additionalProperties": False,
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city"],
        }
    },
}


def _schema(schema: dict) -> Contract:
    return Contract(kind="json_schema", schema=schema)


def _refused(contract: Contract) -> ContractRefused:
    with pytest.raises(ContractRefused) as info:
        check(contract)
    return info.value


def _nested(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_a_realistic_nested_schema_passes():
    check(_schema(REALISTIC))


@pytest.mark.parametrize(
    "contract",
    [
        Contract(kind="json_object"),
        _schema({}),
        _schema({"type": "object", "properties": {"tree": {"$ref": "#"}}}),  # recursive, to the root
        _schema({"definitions": {"x": {"type": "integer"}}, "$ref": "#/definitions/x"}),
        _schema(_nested(MAX_DEPTH)),
        _schema({"type": "string", "format": "date-time"}),
        Contract(kind="regex", pattern=r"[A-Z]{2}\d{4}(-[a-z]+)?"),
        Contract(kind="choice", choices=["yes", "no", "Yes"]),
    ],
)
def test_what_engines_can_enforce_passes(contract):
    check(contract)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_listed_format_passes(fmt):
    check(_schema({"type": "string", "format": fmt}))


SCHEMA_REFUSALS = [
    # (name, schema, path, message fragment)
    ("not a valid schema", {"type": 5}, f"{S}.type", "not a valid JSON Schema"),
    ("not a valid schema at the root", {"required": "name"}, f"{S}.required", "not a valid JSON Schema"),
    ("uniqueItems", {"type": "array", "uniqueItems": True}, f"{S}.uniqueItems", "'uniqueItems' cannot be enforced"),
    ("not", {"not": {"type": "string"}}, f"{S}.not", "'not' cannot be enforced"),
    ("if", {"if": {"type": "string"}, "then": {"minLength": 1}}, f"{S}.if", "'if' cannot be enforced"),
    ("oneOf", {"oneOf": [{"type": "string"}, {"type": "integer"}]}, f"{S}.oneOf", "'oneOf'"),
    ("allOf", {"allOf": [{"type": "string"}]}, f"{S}.allOf", "'allOf'"),
    ("multipleOf", {"type": "integer", "multipleOf": 3}, f"{S}.multipleOf", "'multipleOf'"),
    ("patternProperties", {"patternProperties": {"^x": {}}}, f"{S}.patternProperties", "'patternProperties'"),
    (
        "nested in properties",
        {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}},
        f"{S}.properties.tags.uniqueItems",
        "'uniqueItems'",
    ),
    (
        "nested in items, anyOf, prefixItems, $defs and additionalProperties",
        {
            "$defs": {
                "d": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {"type": "null"},
                            {"prefixItems": [{"type": "string"}, {"additionalProperties": {"not": {}}}]},
                        ]
                    },
                }
            }
        },
        f"{S}.$defs.d.items.anyOf[1].prefixItems[1].additionalProperties.not",
        "'not'",
    ),
    ("pattern and maxLength", {"type": "string", "pattern": "[a-z]+", "maxLength": 5}, f"{S}.pattern", "length"),
    ("pattern and minLength", {"type": "string", "pattern": "[a-z]+", "minLength": 1}, f"{S}.pattern", "length"),
    ("format and maxLength", {"type": "string", "format": "email", "maxLength": 50}, f"{S}.format", "length"),
    ("unknown format", {"type": "string", "format": "credit-card"}, f"{S}.format", "'credit-card' cannot be enforced"),
    ("remote ref", {"$ref": "https://example.com/s.json"}, f"{S}.$ref", "only references within the schema"),
    ("relative file ref", {"$ref": "other.json#/$defs/a"}, f"{S}.$ref", "only references within the schema"),
    ("ref outside $defs", {"properties": {"a": {}}, "$ref": "#/properties/a"}, f"{S}.$ref", "only references"),
    (
        "dangling local ref",
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
        f"{S}.properties.a.$ref",
        "refers to nothing in the schema",
    ),
    (
        "pattern with a lookahead",
        {"type": "object", "properties": {"code": {"type": "string", "pattern": "(?=x)x+"}}},
        f"{S}.properties.code.pattern",
        "lookarounds",
    ),
    ("invalid pattern", {"type": "string", "pattern": "a("}, f"{S}.pattern", "not a valid regular expression"),
    ("too deep", _nested(MAX_DEPTH + 1), S + ".properties.a" * MAX_DEPTH, f"deeper than {MAX_DEPTH} levels"),
]


@pytest.mark.parametrize("name, schema, path, fragment", SCHEMA_REFUSALS, ids=[c[0] for c in SCHEMA_REFUSALS])
def test_a_schema_engines_cannot_enforce_is_refused_naming_where(name, schema, path, fragment):
    refused = _refused(_schema(schema))
    assert refused.path == path
    assert fragment in refused.message, refused.message


def test_a_schema_over_the_size_limit_is_refused():
    big = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(200)}}
    refused = _refused(_schema(big))
    assert refused.path == S and f"limit of {MAX_SCHEMA_BYTES}" in refused.message


def test_a_schema_at_the_size_limit_passes():
    base = {"type": "string", "description": ""}
    room = MAX_SCHEMA_BYTES - len(b'{"type":"string","description":""}')
    check(_schema({**base, "description": "x" * room}))
    with pytest.raises(ContractRefused):
        check(_schema({**base, "description": "x" * (room + 1)}))


REGEX_REFUSALS = [
    ("unbalanced", "a(b", "not a valid regular expression"),
    ("bad repeat", "*a", "not a valid regular expression"),
    ("lookahead", "(?=a)a+", "'(?='"),
    ("negative lookahead", "a(?!b)", "'(?!'"),
    ("lookbehind", "(?<=a)b", "'(?<'"),
    ("backreference", r"(a)\1", r"'\\1'"),
    ("named backreference", r"(?P<x>a)(?P=x)", "'(?P='"),
    ("word boundary", r"\bword\b", r"'\\b'"),
]


@pytest.mark.parametrize("name, pattern, fragment", REGEX_REFUSALS, ids=[c[0] for c in REGEX_REFUSALS])
def test_a_regex_engines_cannot_enforce_is_refused(name, pattern, fragment):
    refused = _refused(Contract(kind="regex", pattern=pattern))
    assert refused.path == "pattern"
    assert fragment in refused.message, refused.message


def test_a_regex_is_checked_without_its_anchors():
    contract = contract_of(RegexFormat(pattern=r"^\d+$"))
    assert contract is not None and contract.pattern == r"\d+"
    check(contract)


def test_duplicate_choices_are_refused_naming_the_second():
    refused = _refused(Contract(kind="choice", choices=["a", "b", "c", "b"]))
    assert refused.path == "choices[3]" and "duplicate choice 'b'" in refused.message


def test_choices_over_the_size_limit_are_refused():
    choices = [f"{i:04d}" + "x" * 252 for i in range(MAX_CHOICES_BYTES // 256 + 1)]
    refused = _refused(Contract(kind="choice", choices=choices))
    assert refused.path == "choices" and f"limit of {MAX_CHOICES_BYTES}" in refused.message
