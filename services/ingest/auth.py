"""Bearer API keys on every /v1 route; the key's tenant scopes everything the request touches.

Keys are looked up by their SHA-256 (Redis never holds a usable key). A found key is remembered
for a few seconds, so revoking one takes effect within CACHE_S. With INFERQ_AUTH=off every caller
is the `default` tenant."""

from __future__ import annotations

import logging
import time

from fastapi import Request

from services.ingest.errors.client import ApiException
from shared.catalog.api_keys import ApiKeyStore, digest
from shared.core.settings import Settings

log = logging.getLogger("inferq.ingest")
DEFAULT_TENANT = "default"
CACHE_S = 5.0
# Every 401 says where keys come from: a first caller has none yet.
HOW_TO_GET_A_KEY = (
    "create one with `inferq keys create --tenant <name>` (on the services' Redis), or start the API "
    "with INFERQ_API_KEYS=<tenant>:<key>; INFERQ_AUTH=off for a local trial"
)


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth == "on"
        self.seeded = {digest(key): tenant for key, tenant in settings.seeded_keys().items()}
        self.store: ApiKeyStore | None = None
        self._cache: dict[str, tuple[str, float]] = {}
        if not self.enabled:
            log.warning(
                "INFERQ_AUTH=off: the API accepts every caller as tenant %r; never expose it like this", DEFAULT_TENANT
            )

    async def __call__(self, request: Request) -> None:
        """App-wide dependency: sets request.state.tenant for /v1 routes or answers 401."""
        if request.url.path.startswith("/v1/") or request.url.path == "/v1":
            request.state.tenant = await self.tenant(request)

    async def tenant(self, request: Request) -> str:
        if not self.enabled:
            return DEFAULT_TENANT
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise _unauthorized(f"Authorization: this API needs `Authorization: Bearer <API key>`; {HOW_TO_GET_A_KEY}")
        sha = digest(key)
        tenant = self.seeded.get(sha)
        if tenant is None:
            hit = self._cache.get(sha)
            if hit and hit[1] > time.monotonic():
                tenant = hit[0]
            elif self.store is not None:
                tenant = await self.store.tenant_of(key)
                if tenant is not None:
                    self._cache[sha] = (tenant, time.monotonic() + CACHE_S)
        if tenant is None:
            raise _unauthorized(f"Authorization: unknown or revoked API key; {HOW_TO_GET_A_KEY}")
        return tenant


def tenant_of(request: Request) -> str:
    return getattr(request.state, "tenant", DEFAULT_TENANT)


def _unauthorized(message: str) -> ApiException:
    return ApiException(
        401, message, type="unauthorized", field="Authorization", headers={"WWW-Authenticate": "Bearer"}
    )
