"""Holding a result to its contract: the worker checks every contracted output before publishing
it, with the `jsonschema` library for schemas (one compiled validator per contract). Patterns are
matched with the `regex` library under a time limit (MATCH_TIMEOUT_S), so a pattern that
backtracks on a long output cannot stall the worker; `.` matches a newline, as in the grammar."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import regex

from shared.wire.contract import Contract

MATCH_TIMEOUT_S = 0.1
FLAGS = regex.DOTALL | regex.VERSION0  # Python's syntax; `.` takes newlines, as xgrammar's grammars do


def search(pattern: str, text: str) -> bool:
    """JSON Schema's `pattern` (found anywhere in the string), with a time limit: out of time counts
    as no match."""
    try:
        return regex.search(pattern, text, flags=FLAGS, timeout=MATCH_TIMEOUT_S) is not None
    except TimeoutError:
        return False


class Verdict(msgspec.Struct, kw_only=True):
    valid: bool
    parsed: Any = msgspec.UNSET  # the decoded JSON of a valid json contract
    message: str = ""  # why it is not valid: the validator's first message


class ResultValidator:
    """Validators by contract id, built on first use and kept (a worker sees few distinct ones)."""

    def __init__(self, most: int = 256) -> None:
        self._checks: dict[str, Any] = {}
        self._most = most

    def check(self, contract_id: str, contract: Contract, text: str) -> Verdict:
        """The verdict on one output; a validator's own failure is a verdict too (never raised)."""
        try:
            return self._check(contract_id, contract, text)
        except TimeoutError:
            return Verdict(valid=False, message=f"the output could not be matched within {MATCH_TIMEOUT_S:g}s")
        except Exception as exc:  # e.g. a reference the validator cannot follow
            return Verdict(valid=False, message=f"the output could not be checked: {type(exc).__name__}: {exc}")

    def _check(self, contract_id: str, contract: Contract, text: str) -> Verdict:
        if contract.kind == "choice":
            choices = contract.choices or []
            if text in choices:
                return Verdict(valid=True)
            return Verdict(valid=False, message=f"the output is not one of the {len(choices)} choices")
        if contract.kind == "regex":
            if self._compiled(contract_id, contract).fullmatch(text, timeout=MATCH_TIMEOUT_S):
                return Verdict(valid=True)
            return Verdict(valid=False, message="the output does not match the pattern")
        try:
            parsed = json.loads(text, parse_constant=_not_json, parse_float=_finite)
        except ValueError as exc:
            return Verdict(valid=False, message=f"the output is not JSON: {exc}")
        except RecursionError:
            return Verdict(valid=False, message="the output is not JSON this service reads: it nests too deeply")
        if contract.kind == "json_object":
            if isinstance(parsed, dict):
                return Verdict(valid=True, parsed=parsed)
            return Verdict(valid=False, message=f"the output is JSON but not an object: {type(parsed).__name__}")
        try:
            error = next(iter(self._compiled(contract_id, contract).iter_errors(parsed)), None)
        except RecursionError:
            return Verdict(valid=False, message="the output nests too deeply to check against the schema")
        if error is None:
            return Verdict(valid=True, parsed=parsed)
        where = "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in error.absolute_path)
        return Verdict(valid=False, message=f"the output does not match the schema at ${where}: {error.message}")

    def _compiled(self, contract_id: str, contract: Contract) -> Any:
        found = self._checks.get(contract_id)
        if found is None:
            if len(self._checks) >= self._most:
                self._checks.pop(next(iter(self._checks)))
            if contract.kind == "regex":
                found = regex.compile(contract.pattern or "", flags=FLAGS)
            else:
                validator = _schema_validator()
                found = validator(contract.schema or {}, format_checker=validator.FORMAT_CHECKER)
            self._checks[contract_id] = found
        return found


_VALIDATOR: Any = None


def _schema_validator() -> Any:
    """Draft 2020-12's validator with `pattern` matched by `search` (time-limited, DOTALL)."""
    global _VALIDATOR
    if _VALIDATOR is None:
        from jsonschema import Draft202012Validator, ValidationError, validators

        def pattern(validator, patrn, instance, schema):
            if validator.is_type(instance, "string") and not search(patrn, instance):
                yield ValidationError(f"{instance!r} does not match {patrn!r}")

        _VALIDATOR = validators.extend(Draft202012Validator, {"pattern": pattern})
    return _VALIDATOR


def _not_json(name: str) -> Any:
    """json.loads takes NaN and Infinity, which JSON has no words for (a result would carry null)."""
    raise ValueError(f"{name} is not a JSON value")


def _finite(literal: str) -> float:
    """A number too large for a float (1e999) would reach the result as null: refused as well."""
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {literal[:40]} is out of range")
    return value
