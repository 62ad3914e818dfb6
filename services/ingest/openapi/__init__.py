"""The OpenAPI document, exact for the running server: msgspec schemas, error statuses, configured limits, links."""
