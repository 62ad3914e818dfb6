"""Holding a result to its contract: the worker checks every contracted output before publishing
it, with the `jsonschema` library for schemas (one compiled validator per contract)."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from shared.wire.contract import Contract


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
        if contract.kind == "choice":
            choices = contract.choices or []
            if text in choices:
                return Verdict(valid=True)
            return Verdict(valid=False, message=f"the output is not one of the {len(choices)} choices")
        if contract.kind == "regex":
            if self._compiled(contract_id, contract).fullmatch(text):
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
                found = re.compile(contract.pattern or "")
            else:
                from jsonschema import Draft202012Validator

                found = Draft202012Validator(contract.schema or {}, format_checker=Draft202012Validator.FORMAT_CHECKER)
            self._checks[contract_id] = found
        return found


def _not_json(name: str) -> Any:
    """json.loads takes NaN and Infinity, which JSON has no words for (a result would carry null)."""
    raise ValueError(f"{name} is not a JSON value")


def _finite(literal: str) -> float:
    """A number too large for a float (1e999) would reach the result as null: refused as well."""
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {literal[:40]} is out of range")
    return value
