"""`response_format`: the shape a request asks its output to take (OpenAI's three shapes, plus
inferq's `regex` and `choice`). What is checked beyond these fields, and how results are held to
them: shared/wire/contract.py, services/ingest/contract_check.py and
services/inference/result_validation.py."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

SchemaName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Choice = Annotated[str, Meta(min_length=1, max_length=256)]


class TextFormat(Struct, forbid_unknown_fields=True, tag_field="type", tag="text"):
    """Free text: no contract (the default)."""


class JsonObjectFormat(Struct, forbid_unknown_fields=True, tag_field="type", tag="json_object"):
    """Any JSON object."""


class JsonSchemaSpec(Struct, forbid_unknown_fields=True, kw_only=True):
    name: SchemaName
    schema: dict[str, Any]
    description: str | None = None
    # OpenAI's flag; inferq enforces the schema either way (engines that can, by construction)
    strict: bool | None = None


class JsonSchemaFormat(Struct, forbid_unknown_fields=True, kw_only=True, tag_field="type", tag="json_schema"):
    """A JSON value valid against `json_schema.schema`."""

    json_schema: JsonSchemaSpec


class RegexFormat(Struct, forbid_unknown_fields=True, kw_only=True, tag_field="type", tag="regex"):
    """Text the whole of which matches `pattern`."""

    pattern: Annotated[str, Meta(min_length=1, max_length=4096)]


class ChoiceFormat(Struct, forbid_unknown_fields=True, kw_only=True, tag_field="type", tag="choice"):
    """Exactly one of `choices`."""

    choices: Annotated[list[Choice], Meta(min_length=1, max_length=256)]


ResponseFormat = TextFormat | JsonObjectFormat | JsonSchemaFormat | RegexFormat | ChoiceFormat
