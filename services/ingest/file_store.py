"""Uploaded files and each tenant's file quota: the only code that writes or deletes them.

A tenant's stored files count against `INFERQ_TENANT_FILE_BYTES` and `INFERQ_TENANT_FILES` until
deleted or expired. Files expire without telling anyone, so the usage is a hash of (expiry, size)
per file that the upload script prunes before it checks, in the same step as the write."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from services.ingest.openai_batch import FileObject
from shared.redis import scripts
from shared.redis.index_pages import read_indexes, start_at
from shared.redis.keys import Keys

META_FIELD, CONTENT_FIELD = "meta", "content"
_file_dec = msgspec.json.Decoder(FileObject)


class Stored(msgspec.Struct, frozen=True):
    """The upload script's verdict, with the tenant's usage before this file."""

    refused: str | None  # None (stored), or the quota it would pass: `bytes` or `files`
    used_bytes: int
    files: int


class FileStore:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self._store = scripts.register(r, __name__, "store_file")

    async def store(
        self,
        tenant: str,
        file_id: str,
        meta: bytes,
        content: bytes,
        *,
        created_at: int,
        ttl_s: int,
        max_bytes: int,
        max_files: int,
    ) -> Stored:
        """Write the file if it fits the tenant's quota; nothing is written if it does not."""
        k = self.keys
        verdict, used, files = await self._store(
            keys=[k.file(file_id), k.files_index(tenant), k.file_usage(tenant)],
            args=[file_id, META_FIELD, meta, CONTENT_FIELD, content, ttl_s, created_at, max_bytes, max_files],
        )
        refused = verdict.decode()
        return Stored(None if refused == "ok" else refused, int(used), int(files))

    async def read(self, tenant: str, after: str | None, want: int) -> list[FileObject]:
        """Up to `want` of the tenant's files after the one with id `after`, newest first."""
        index = self.keys.files_index(tenant)
        position, by_id = await start_at(self.r, index, after, newest_first=True)

        async def load(ids: list[str]) -> list[FileObject | None]:
            pipe = self.r.pipeline(transaction=False)
            for file_id in ids:
                pipe.hget(self.keys.file(file_id), META_FIELD)
            return [None if raw is None else _file_dec.decode(raw) for raw in await pipe.execute()]

        return await read_indexes(self.r, [index], after=position, by_id=by_id, want=want, newest_first=True, load=load)

    async def delete(self, tenant: str, file_id: str) -> bool:
        """Delete a file and give its bytes back to the quota; whether it was there."""
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.file(file_id))
            pipe.zrem(self.keys.files_index(tenant), file_id)
            pipe.hdel(self.keys.file_usage(tenant), file_id)
            deleted, _, _ = await pipe.execute()
        return bool(deleted)
