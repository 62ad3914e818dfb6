"""The HTTP API, one APIRouter per area; `services.ingest.app.create_app` includes them in this
order (the order of /openapi.json)."""
