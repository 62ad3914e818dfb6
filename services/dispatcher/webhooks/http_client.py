"""The HTTP client of webhook attempts: one connection pool per host name.

A request goes to the address the SSRF guard checked (the URL carries that address, the name
travels as Host and as the TLS server name, against which the certificate is verified). Pools are
chosen by the name, not by the address, so a connection opened and verified for one name is never
reused for another name that shares its address. Proxies from the environment are not used: they
would connect on their own, past the check. Certificates are always verified, against the
system's CAs or, when given, a CA bundle (`INFERQ_WEBHOOK_CA_BUNDLE`)."""

from __future__ import annotations

import ssl
from collections import OrderedDict

import httpx

from shared.webhooks.url_guard import Target


class WebhookHttp:
    def __init__(self, *, max_connections_per_host: int, ca_bundle: str = "", max_idle_hosts: int = 1000) -> None:
        self._verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        self._limits = httpx.Limits(
            max_connections=max_connections_per_host, max_keepalive_connections=max_connections_per_host
        )
        self._max_idle_hosts = max_idle_hosts
        self._pools: OrderedDict[str, httpx.AsyncClient] = OrderedDict()  # least recently used first
        self._in_flight: dict[str, int] = {}

    def pool_count(self) -> int:
        return len(self._pools)

    async def post(self, target: Target, *, content: bytes, headers: dict[str, str], timeout: float) -> httpx.Response:
        pool = await self._pool(target.host.lower())
        if target.host_header:
            headers = {**headers, "host": target.host_header}
        extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
        key = target.host.lower()
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            return await pool.post(target.url, content=content, headers=headers, timeout=timeout, extensions=extensions)
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    async def _pool(self, host: str) -> httpx.AsyncClient:
        pool = self._pools.pop(host, None)
        if pool is None:
            await self._close_idle()
            pool = httpx.AsyncClient(verify=self._verify, limits=self._limits, follow_redirects=False, trust_env=False)
        self._pools[host] = pool
        return pool

    async def _close_idle(self) -> None:
        """Above `max_idle_hosts` pools, close the least recently used ones with nothing in flight."""
        for host in list(self._pools):
            if len(self._pools) < self._max_idle_hosts:
                return
            if host not in self._in_flight:
                await self._pools.pop(host).aclose()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()
