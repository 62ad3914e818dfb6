"""The contracts requests are held to, as the worker needs them: each fetched once from its job's
hash (where it is stored once per job) and kept by id, and each result judged against it."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from services.inference.result_validation import ResultValidator, Verdict
from shared.core.errors import TRANSIENT_REDIS_ERRORS
from shared.redis.keys import Keys, contract_field
from shared.wire.contract import Contract, decode
from shared.wire.messages import InferenceRequest

log = logging.getLogger("inferq.worker")
KEPT = 512  # contracts kept in memory (a worker sees few distinct ones)


class ContractMissing(Exception):
    """The job's hash no longer holds the contract (the job is gone): nothing to hold it to."""


class OutputContracts:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self._known: dict[str, Contract] = {}
        self.validator = ResultValidator()

    async def of(self, req: InferenceRequest) -> Contract | None:
        if req.contract is None:
            return None
        found = self._known.get(req.contract)
        if found is None:
            found = decode(await self._fetch(req))
            if len(self._known) >= KEPT:
                self._known.pop(next(iter(self._known)))
            self._known[req.contract] = found
        return found

    async def _fetch(self, req: InferenceRequest) -> bytes:
        assert req.contract is not None
        while True:  # through a Redis outage, as every other read of the worker
            try:
                raw = await self.r.hget(self.keys.job(req.job_id), contract_field(req.contract))  # type: ignore[misc]
            except TRANSIENT_REDIS_ERRORS as exc:
                log.warning("contract %s not read yet: %s", req.contract, exc)
                await asyncio.sleep(0.5)
                continue
            if raw is None:
                raise ContractMissing(f"job {req.job_id} holds no contract {req.contract}")
            return raw

    def judge(self, req: InferenceRequest, contract: Contract, text: str) -> Verdict:
        return self.validator.check(req.contract or "", contract, text)
