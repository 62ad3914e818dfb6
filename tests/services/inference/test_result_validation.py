"""ResultValidator.check: how the worker holds an output to its contract."""

from __future__ import annotations

import json

import msgspec
import pytest

from services.inference.result_validation import ResultValidator
from shared.wire.contract import Contract, contract_of
from shared.wire.formats import RegexFormat

SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "when": {"type": "string", "format": "date"},
    },
    "required": ["score"],
    "additionalProperties": False,
}
JSON_OBJECT = Contract(kind="json_object")
JSON_SCHEMA = Contract(kind="json_schema", schema=SCHEMA)


@pytest.fixture
def v() -> ResultValidator:
    return ResultValidator()


@pytest.mark.parametrize("text", ['{"a": 1}', "{}", ' \n{"nested": {"b": [1, 2]}} '])
def test_a_json_object_is_valid_and_parsed(v, text):
    verdict = v.check("obj", JSON_OBJECT, text)
    assert verdict.valid and verdict.parsed == json.loads(text) and verdict.message == ""


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[1, 2]", "not an object: list"),
        ('"a string"', "not an object: str"),
        ("42", "not an object: int"),
        ("null", "not an object: NoneType"),
        ("{'a': 1}", "not JSON"),
        ('{"a": 1', "not JSON"),
        ('{"a": 1} trailing', "not JSON"),
        ("", "not JSON"),
        ("Sure! Here it is: {}", "not JSON"),
    ],
)
def test_anything_but_a_json_object_is_refused(v, text, fragment):
    verdict = v.check("obj", JSON_OBJECT, text)
    assert not verdict.valid and fragment in verdict.message


def test_a_result_valid_against_the_schema_is_parsed(v):
    verdict = v.check("s", JSON_SCHEMA, '{"score": 7, "tags": ["a"], "when": "2026-12-07"}')
    assert verdict.valid and verdict.parsed == {"score": 7, "tags": ["a"], "when": "2026-12-07"}


@pytest.mark.parametrize(
    "text, where, fragment",
    [
        ('{"score": 11}', "$['score']", "11 is greater than the maximum of 10"),
        ('{"score": "7"}', "$['score']", "'7' is not of type 'integer'"),
        ('{"tags": ["a"]}', "$", "'score' is a required property"),
        ('{"score": 1, "extra": true}', "$", "Additional properties are not allowed"),
        ('{"score": 1, "tags": ["a", 5]}', "$['tags'][1]", "5 is not of type 'string'"),
        ('{"score": 1, "tags": ["a", "b", "c"]}', "$['tags']", "is too long"),
        ('{"score": 1, "when": "yesterday"}', "$['when']", "is not a 'date'"),
        ("[7]", "$", "is not of type 'object'"),
    ],
)
def test_a_result_invalid_against_the_schema_names_where(v, text, where, fragment):
    verdict = v.check("s", JSON_SCHEMA, text)
    assert not verdict.valid
    assert f"the output does not match the schema at {where}: " in verdict.message, verdict.message
    assert fragment in verdict.message, verdict.message


def test_a_schema_result_that_is_not_json_is_refused(v):
    verdict = v.check("s", JSON_SCHEMA, '{"score": 7,}')
    assert not verdict.valid and "not JSON" in verdict.message


REGEX = contract_of(RegexFormat(pattern=r"^\d{3}-[a-z]+$"))


@pytest.mark.parametrize("text", ["123-abc", "000-z"])
def test_a_regex_result_must_match_whole(v, text):
    verdict = v.check("re", REGEX, text)
    assert verdict.valid and verdict.parsed is msgspec.UNSET  # a regex result is not parsed


@pytest.mark.parametrize("text", ["123-abc!", "x123-abc", "123-abc\n", "123-", "12-abc", ""])
def test_a_regex_result_that_matches_only_in_part_is_refused(v, text):
    verdict = v.check("re", REGEX, text)
    assert not verdict.valid and verdict.message == "the output does not match the pattern"


def test_an_unanchored_pattern_also_has_to_match_the_whole_output(v):
    contract = Contract(kind="regex", pattern="yes|no")
    assert v.check("yn", contract, "no").valid
    assert not v.check("yn", contract, "yes and no").valid


CHOICE = Contract(kind="choice", choices=["positive", "negative", "neutral"])


def test_a_choice_result_must_be_one_of_them_exactly(v):
    assert v.check("c", CHOICE, "negative").valid
    for text in ("Negative", " negative", "negative.", "pos", ""):
        verdict = v.check("c", CHOICE, text)
        assert not verdict.valid and verdict.message == "the output is not one of the 3 choices", text


def test_validators_are_kept_by_contract_id_within_the_limit():
    v = ResultValidator(most=2)
    a = Contract(kind="regex", pattern="a+")
    b = Contract(kind="regex", pattern="b+")
    c = Contract(kind="json_schema", schema={"type": "integer"})
    assert v.check("a", a, "aaa").valid and v.check("b", b, "bb").valid and v.check("c", c, "3").valid
    assert list(v._checks) == ["b", "c"]  # the oldest went
    assert v.check("a", a, "aa").valid and not v.check("a", a, "b").valid  # built again


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999", '{"x": NaN}'])
@pytest.mark.parametrize("contract", [JSON_OBJECT, Contract(kind="json_schema", schema={})], ids=["object", "schema"])
def test_nan_infinity_and_out_of_range_numbers_are_not_json(v, text, contract):
    """json.loads takes them; a result would carry null in their place."""
    verdict = v.check("n", contract, text)
    assert not verdict.valid and "not JSON" in verdict.message, verdict.message


@pytest.mark.parametrize("contract", [JSON_OBJECT, Contract(kind="json_schema", schema={"type": "array"})])
def test_deeply_nested_output_is_refused_not_raised(v, contract):
    verdict = v.check("deep", contract, "[" * 100_000 + "]" * 100_000)
    assert not verdict.valid and "nests too deeply" in verdict.message, verdict.message


def test_a_dot_takes_a_newline_as_the_grammar_does():
    contract = Contract(kind="regex", pattern=".{1,20}")
    assert ResultValidator().check("dot", contract, "two\nlines").valid
    schema = Contract(kind="json_schema", schema={"type": "string", "pattern": "^a.b$"})
    assert ResultValidator().check("dot-schema", schema, '"a\\nb"').valid


def test_a_pattern_that_backtracks_without_end_is_cut_off_not_waited_for():
    import time

    contract = Contract(kind="regex", pattern="(x+x+)+y")
    started = time.monotonic()
    verdict = ResultValidator().check("slow", contract, "x" * 5000)
    assert not verdict.valid and time.monotonic() - started < 2, verdict


def test_a_validator_failure_is_a_verdict_not_an_exception():
    contract = Contract(kind="json_schema", schema={"$ref": "#/$defs/missing"})
    verdict = ResultValidator().check("dangling", contract, "{}")
    assert not verdict.valid and "could not be checked" in verdict.message
