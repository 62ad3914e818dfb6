"""Limits that come from this server's configuration, written into the document's schemas: the
configured model names, each model's `max_tokens_limit`, the prompt and job size limits, and
whether webhook URLs may use plain http. The Structs state what holds for every server; this
states what the running one accepts."""

from __future__ import annotations

from typing import Any

from services.ingest.openapi import contracts
from shared.catalog.models import ModelsConfig
from shared.core.settings import Settings
from shared.wire.api import WEBHOOK_URL_PATTERN

_SPECS = ("RequestSpec", "PromptSpec")


def _value_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """The schema of a property's value, past the `null` that an optional field also allows."""
    for branch in prop.get("anyOf", ()):
        if branch.get("type") != "null":
            return branch
    return prop


def apply(doc: dict[str, Any], settings: Settings, models: ModelsConfig) -> None:
    schemas = doc.get("components", {}).get("schemas", {})
    names = models.names()
    limits = {name: models.models[name].max_tokens_limit for name in names}
    for spec in _SPECS:
        props = schemas.get(spec, {}).get("properties")
        if not props:
            continue
        props["model"]["enum"] = names
        _value_schema(props["prompt"])["maxLength"] = settings.max_prompt_chars
        if limits:
            _value_schema(props["max_tokens"])["maximum"] = max(limits.values())
        if len(set(limits.values())) > 1:  # each model its own limit
            schemas[spec].setdefault("allOf", []).extend(
                [
                    {
                        "if": {"properties": {"model": {"const": name}}, "required": ["model"]},
                        "then": {"properties": {"max_tokens": {"anyOf": [{"type": "null"}, {"maximum": limit}]}}},
                    }
                    for name, limit in limits.items()
                ]
            )
    contracts.apply(schemas, models)
    message = schemas.get("ChatMessage", {}).get("properties", {}).get("content")
    if message is not None:
        message["maxLength"] = settings.max_prompt_chars
        message["description"] = f"The contents of a request's messages total at most {settings.max_prompt_chars}"
    job = schemas.get("JobCreate", {}).get("properties", {})
    for field in ("requests", "prompts"):
        if field in job:
            _value_schema(job[field])["maxItems"] = settings.max_requests_per_job
    for holder in ("WebhookCreate", "JobWebhook"):
        url = schemas.get(holder, {}).get("properties", {}).get("url")
        if url is None:
            continue
        if not settings.webhook_allow_http:
            url["pattern"] = WEBHOOK_URL_PATTERN.replace("^https?://", "^https://", 1)
        if not settings.webhook_allow_private:
            url["description"] = (
                "https URL that receives the events; its host must resolve to public addresses only"
                + ("" if not settings.webhook_allow_http else " (http is allowed)")
            )
