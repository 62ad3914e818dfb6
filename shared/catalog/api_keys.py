"""API keys: each names a tenant. Stored only as their SHA-256, so a copy of Redis holds no usable
key; the key itself is shown once, when created."""

from __future__ import annotations

import hashlib
import secrets
import time

import msgspec
import redis.asyncio as aioredis

from shared.core.settings import valid_tenant
from shared.redis.keys import Keys

KEY_PREFIX = "iq_"


class ApiKeyRecord(msgspec.Struct, kw_only=True):
    id: str  # the first 16 hex digits of the key's SHA-256: names the key in listings and revocation
    tenant: str
    name: str = ""
    created_at: int


_dec = msgspec.json.Decoder(ApiKeyRecord)
_enc = msgspec.json.Encoder()


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyStore:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.r = r
        self.keys = keys

    async def create(self, tenant: str, name: str = "") -> tuple[str, ApiKeyRecord]:
        if not valid_tenant(tenant):
            raise ValueError(
                f"tenant {tenant!r}: use 1-63 characters a-z, 0-9, _ or -, starting with a letter or digit "
                "(`default` is reserved)"
            )
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        sha = digest(key)
        rec = ApiKeyRecord(id=sha[:16], tenant=tenant, name=name, created_at=int(time.time()))
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.api_key(sha), _enc.encode(rec))
            pipe.zadd(self.keys.api_keys_index, {sha: rec.created_at})
            await pipe.execute()
        return key, rec

    async def tenant_of(self, key: str) -> str | None:
        raw = await self.r.get(self.keys.api_key(digest(key)))
        return _dec.decode(raw).tenant if raw else None

    async def list(self) -> list[ApiKeyRecord]:
        shas = [s.decode() for s in await self.r.zrange(self.keys.api_keys_index, 0, -1)]
        raws = await self.r.mget([self.keys.api_key(s) for s in shas]) if shas else []
        return [_dec.decode(raw) for raw in raws if raw]

    async def revoke(self, key_id: str) -> ApiKeyRecord | None:
        """Revoke the key whose id (or any longer prefix of its SHA-256) is given."""
        if len(key_id) < 8:
            return None
        for sha in [s.decode() for s in await self.r.zrange(self.keys.api_keys_index, 0, -1)]:
            if sha.startswith(key_id):
                raw = await self.r.get(self.keys.api_key(sha))
                async with self.r.pipeline(transaction=True) as pipe:
                    pipe.delete(self.keys.api_key(sha))
                    pipe.zrem(self.keys.api_keys_index, sha)
                    await pipe.execute()
                return _dec.decode(raw) if raw else None
        return None
