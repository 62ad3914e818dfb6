"""A contract: the normalised form of a `response_format` that engines enforce and the worker
validates. It is content-addressed, so a job stores each distinct one once and every request
(and every worker's compiled grammar) refers to it by id."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from shared.wire.api import ContractKind
from shared.wire.formats import ChoiceFormat, JsonObjectFormat, JsonSchemaFormat, RegexFormat, ResponseFormat

Kind = ContractKind


class Contract(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: Kind
    schema: dict[str, Any] | None = None  # json_schema
    pattern: str | None = None  # regex, without the ^ and $ anchors (the whole text must match)
    choices: list[str] | None = None  # choice
    name: str | None = None  # json_schema: its name and `strict`, for endpoints the format is passed on to
    strict: bool | None = None

    @property
    def is_json(self) -> bool:
        return self.kind in ("json_object", "json_schema")


# Keys keep the order they were given in: a schema's property order is the order the output is
# written in (a model asked for "reasoning" before "answer" writes it first).
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Contract)


def encode(contract: Contract) -> bytes:
    """Compact JSON: equal contracts (keys in the same order) encode to equal bytes."""
    return _encoder.encode(contract)


def decode(raw: bytes | str) -> Contract:
    return _decoder.decode(raw)


def contract_id(encoded: bytes) -> str:
    """The id of an encoded contract: 16 hex digits of its SHA-256."""
    return hashlib.sha256(encoded).hexdigest()[:16]


def contract_of(fmt: ResponseFormat | None) -> Contract | None:
    """The contract a response_format asks for; None for free text."""
    if isinstance(fmt, JsonObjectFormat):
        return Contract(kind="json_object")
    if isinstance(fmt, JsonSchemaFormat):
        spec = fmt.json_schema
        return Contract(kind="json_schema", schema=spec.schema, name=spec.name, strict=spec.strict)
    if isinstance(fmt, RegexFormat):
        return Contract(kind="regex", pattern=_unanchored(fmt.pattern))
    if isinstance(fmt, ChoiceFormat):
        return Contract(kind="choice", choices=fmt.choices)
    return None


def _unanchored(pattern: str) -> str:
    """`^...$` and `...` mean the same here: the whole output matches."""
    if pattern.startswith("^"):
        pattern = pattern[1:]
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1]
    return pattern
