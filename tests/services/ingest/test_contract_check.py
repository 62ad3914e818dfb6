"""contract_check.check: each way a contract is refused (with the path it names), and what passes."""

from __future__ import annotations

import json

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


PASSING = [
    Contract(kind="json_object"),
    _schema({}),
    _schema({"type": "object", "properties": {"tree": {"$ref": "#"}}}),  # recursive, to the root
    _schema({"definitions": {"x": {"type": "integer"}}, "$ref": "#/definitions/x"}),
    _schema(_nested(MAX_DEPTH)),
    _schema({"type": "number", "minimum": 1, "maximum": 1}),
    _schema({"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 3}),
    _schema({"type": "array", "items": {"type": "string"}, "minItems": 2}),
    _schema({"type": "array", "prefixItems": [{}, {}], "minItems": 2}),
    _schema({"type": "object", "properties": {"a": {}}, "minProperties": 1}),
    _schema({"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 3}),
    _schema({"minItems": 3}),  # no type: any value, arrays included, is allowed
    _schema({"type": "string", "format": "date-time"}),
    Contract(kind="regex", pattern=r"[A-Z]{2}\d{4}(-[a-z]+)?"),
    Contract(kind="choice", choices=["yes", "no", "Yes"]),
]


@pytest.mark.parametrize("contract", PASSING)
def test_what_engines_can_enforce_passes(contract):
    check(contract)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_listed_format_passes(fmt):
    check(_schema({"type": "string", "format": fmt}))


SCHEMA_REFUSALS = [
    # (name, schema, path, message fragment)
    ("$id below the root", {"properties": {"x": {"$id": "http://e.com/x"}}}, f"{S}.properties.x.$id", "root only"),
    ("$ref into a keyword", {"$defs": {"a": {"const": {}}}, "$ref": "#/$defs/a/const"}, f"{S}.$ref", "supported"),
    ("$ref by a list index", {"$defs": {"a": {"anyOf": [{}]}}, "$ref": "#/$defs/a/anyOf/0"}, f"{S}.$ref", "supported"),
    (  # a digit int() does not read: a ref the format check refuses before the walk
        "$ref by a superscript index",
        {"$defs": {"a": {"anyOf": [{}]}}, "$ref": "#/$defs/a/anyOf/\u00b2"},
        f"{S}.$ref",
        "is not a 'uri-reference'",
    ),
    ("a required name no object can hold", {"type": "object", "required": ["a"]}, f"{S}.required", "'a' is required"),
    (
        "a required name beside closed properties",
        {"properties": {"b": {}}, "required": ["a"], "additionalProperties": False},
        f"{S}.required",
        "'a' is required",
    ),
    ("an integer's fractional bound", {"type": "integer", "minimum": 1.5}, f"{S}.minimum", "whole number"),
    ("an integer's bound past 64 bits", {"type": "integer", "maximum": 1e30}, f"{S}.maximum", "within 64 bits"),
    ("an integer's bound past a float", {"type": "integer", "minimum": 10**400}, f"{S}.minimum", "within 64 bits"),
    (
        "a schema pattern repeating past what Python compiles",
        {"type": "string", "pattern": "a{99999999999999999999}"},
        S,
        "OverflowError",
    ),
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
    ("remote ref", {"$ref": "https://example.com/s.json"}, f"{S}.$ref", "references are supported"),
    ("relative file ref", {"$ref": "other.json#/$defs/a"}, f"{S}.$ref", "references are supported"),
    ("ref outside $defs", {"properties": {"a": {}}, "$ref": "#/properties/a"}, f"{S}.$ref", "references are supported"),
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
    ("invalid pattern", {"type": "string", "pattern": "a("}, f"{S}.pattern", "not a valid JSON Schema"),
    (
        "pattern a grammar cannot express",
        {"type": "string", "pattern": "(?i)[a-z]+"},
        f"{S}.pattern",
        "inline flags",
    ),
    ("too deep", _nested(MAX_DEPTH + 1), S + ".properties.a" * (MAX_DEPTH + 1), f"deeper than {MAX_DEPTH} levels"),
    ("escaped ref", {"$defs": {"a b": {}}, "$ref": "#/$defs/a%20b"}, f"{S}.$ref", "references are supported"),
    ("escaped ref ~", {"$defs": {"a/b": {}}, "$ref": "#/$defs/a~1b"}, f"{S}.$ref", "references are supported"),
    ("empty enum", {"enum": []}, f"{S}.enum", "an empty enum allows no value"),
    (
        "minItems over maxItems",
        {"type": "array", "items": {}, "minItems": 3, "maxItems": 2},
        f"{S}.minItems",
        "is more",
    ),
    ("minLength over maxLength", {"type": "string", "minLength": 3, "maxLength": 2}, f"{S}.minLength", "is more"),
    (
        "minProperties over max",
        {"type": "object", "minProperties": 2, "maxProperties": 1},
        f"{S}.minProperties",
        "more",
    ),
    ("minimum over maximum", {"type": "number", "minimum": 2, "maximum": 1}, f"{S}.minimum", "leave no value"),
    ("empty open range", {"type": "number", "minimum": 1, "exclusiveMaximum": 1}, f"{S}.minimum", "leave no value"),
    (
        "array with no items",
        {"type": "array", "minItems": 1},
        f"{S}.minItems",
        "give `items` a schema",
    ),
    (
        "more items than prefixItems",
        {"type": ["array", "null"], "prefixItems": [{}], "items": False, "minItems": 2},
        f"{S}.minItems",
        "give `items` a schema",
    ),
    (
        "object with no more properties",
        {"type": "object", "properties": {"a": {}}, "minProperties": 2},
        f"{S}.minProperties",
        "give `additionalProperties` a schema",
    ),
    (
        "no integer in range",
        {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2}}},
        f"{S}.properties.n.exclusiveMinimum",
        "leave no value",
    ),
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
    ("named group", r"(?P<x>a)b", "'(?P'"),
    ("word boundary", r"\bword\b", r"'\\b'"),
    ("inline flag", r"(?i)abc", "inline flags"),
    ("scoped flag", r"(?i:a)bc", "inline flags"),
    ("atomic group", r"(?>ab)c", "atomic groups"),
    ("conditional", r"(a)?(?(1)b|c)", "conditionals"),
    ("comment", r"(?#note)a", "comments"),
    ("possessive plus", r"a++", "possessive"),
    ("possessive count", r"a{2}+", "possessive"),
    ("count without a lower bound", r"a{,3}", "not a repetition"),
    ("literal brace", r"a{x}", "not a repetition"),
    ("class opening with ]", r"[]a]+", "opens with `]`"),
    # xgrammar reads \A and \Z as letters and skips an inner $; Python's re as anchors
    ("anchor escapes", r"\Aab\Z", "anchors"),
    ("an anchor inside", r"a$|b", "inside the pattern"),
    ("a caret inside", r"a|^b", "inside the pattern"),
    ("NUL", "a\x00b", "NUL"),
    ("a POSIX class", "[[:digit:]]+", "POSIX classes"),
    ("a count past what Python compiles", "a{4294967296}", "not a valid regular expression"),
    ("groups nested past the recursion limit", "(" * 500 + ")" * 500, "not a valid regular expression"),
]


@pytest.mark.parametrize("name, pattern, fragment", REGEX_REFUSALS, ids=[c[0] for c in REGEX_REFUSALS])
def test_a_regex_engines_cannot_enforce_is_refused(name, pattern, fragment):
    refused = _refused(Contract(kind="regex", pattern=pattern))
    assert refused.path == "pattern"
    assert fragment in refused.message, refused.message


PASSING_REGEXES = [
    r"[a-z.:=]+",  # `.`, `:` and `=` in a class, no POSIX class
    r"\\1",  # a backslash, then 1: no backreference
    r"[\b]",  # a backspace in a class: no word boundary
    r"\(?x",  # an optional parenthesis: no group
    r"[(?=]+",  # in a class: no lookahead
    r"\{x\}",
    r"[{]+",
    r"a{2}",
    r"a{2,}",
    r"a{2,3}?",
    r"a+?b*?c??",
    r"(?:ab)+",
    r"[^\]]+",
    r"[\w.+-]+@[\w-]+\.[a-z]{2,}",
]


@pytest.mark.parametrize("pattern", PASSING_REGEXES)
def test_a_regex_a_grammar_can_express_passes(pattern):
    check(Contract(kind="regex", pattern=pattern))


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


# What xgrammar (the engines' grammar backend) makes of the same contracts, compiled the way the
# engines compile them: the check must not pass what it cannot build a grammar for, nor refuse
# (as a regex a grammar cannot express) what it can.
NO_GRAMMAR = {
    "dangling local ref",
    "escaped ref",
    "escaped ref ~",
    "empty enum",
    "minItems over maxItems",
    "minLength over maxLength",
    "minimum over maximum",
    "empty open range",
    "array with no items",
    "more items than prefixItems",
    "object with no more properties",
    "no integer in range",
}
# refused because xgrammar cannot build them (the rest: Python cannot compile them, or xgrammar
# builds them with another meaning than the worker's validator gives them)
NOT_GRAMMAR = ("unbalanced", "bad repeat", "anchor escapes", "an anchor inside", "a caret inside")
NOT_GRAMMAR += ("a count past what Python compiles", "groups nested past the recursion limit", "a POSIX class")
GRAMMAR_REGEX_REFUSALS = [c for c in REGEX_REFUSALS if c[0] not in NOT_GRAMMAR]


@pytest.fixture(scope="module")
def xgr():
    return pytest.importorskip("xgrammar")


def _builds(xgr, contract: Contract) -> bool:
    try:
        if contract.kind == "regex":
            xgr.Grammar.from_regex(contract.pattern)
        else:
            xgr.Grammar.from_json_schema(json.dumps(contract.schema), any_whitespace=False, strict_mode=True)
    except RuntimeError:
        return False
    return True


def test_every_schema_refused_for_leaving_no_grammar_is_one_xgrammar_cannot_build(xgr):
    cases = [c for c in SCHEMA_REFUSALS if c[0] in NO_GRAMMAR]
    assert len(cases) == len(NO_GRAMMAR)
    built = [name for name, schema, _, _ in cases if _builds(xgr, _schema(schema))]
    assert built == []


def test_every_passing_schema_is_one_xgrammar_can_build(xgr):
    schemas = [REALISTIC, *(c.schema for c in PASSING if c.kind == "json_schema")]
    schemas += [{"type": "string", "format": fmt} for fmt in sorted(FORMATS)]
    assert [s for s in schemas if not _builds(xgr, _schema(s))] == []


def test_regexes_refused_and_passed_agree_with_xgrammar(xgr):
    refused = [p for _, p, _ in GRAMMAR_REGEX_REFUSALS if _builds(xgr, Contract(kind="regex", pattern=p))]
    passed = [p for p in PASSING_REGEXES if not _builds(xgr, Contract(kind="regex", pattern=p))]
    assert (refused, passed) == ([], [])


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "exclusiveMaximum": 2**63, "exclusiveMinimum": -(2**63) - 1},  # 64-bit bounds
        {"required": ["a"], "anyOf": [{"type": "object", "properties": {"a": {}}}]},  # listed in a branch
        {"$defs": {"o": {"type": "object", "properties": {"a": {}}}}, "$ref": "#/$defs/o", "required": ["a"]},
    ],
)
def test_a_schema_whose_names_or_bounds_are_met_elsewhere_passes(schema):
    check(_schema(schema))
