"""Refuses webhook URLs that would make inferq call into its own network (SSRF).

An address is called only if it is globally reachable: `ipaddress`'s `is_global`, and not
multicast, reserved, unspecified, site-local or in a special-purpose range this Python does not
mark yet (`_NOT_GLOBAL`). An IPv6 address that carries an IPv4 address is judged by it too:
- IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::/96`, RFC 6052) by the IPv4 address alone,
  since that is where the packet goes. NAT64 is allowed so IPv6-only hosts behind DNS64 can reach
  IPv4-only receivers; an embedded private address is refused like the address itself. The
  local-use NAT64 prefix `64:ff9b:1::/48` is refused.
- 6to4 (`2002::/16`) and Teredo (`2001::/32`, server and client) need the IPv6 address and every
  embedded IPv4 address to pass (Teredo is never global, so it is always refused).
- IPv4-compatible (`::a.b.c.d`, deprecated) is reserved, so refused.
Every address a name resolves to must pass; the request then goes to the first of them (pinned),
so a DNS answer that changes between check and connect cannot redirect it. Checked when an
endpoint is registered and again before every attempt. The message for a refused address is the
same whether the name resolved to a private address or did not resolve at all, and never says
what it resolved to: a caller must not learn the inside of inferq's network from it."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from shared.core.errors import UnsafeURL

REFUSED = "the URL resolves to an address inferq does not call"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger("inferq.webhooks")
_METADATA_NAMES = {"metadata.google.internal", "metadata"}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Special-purpose ranges (IANA registries, "Globally Reachable: False" or deprecated) that
# `is_global` of Python 3.11 still calls global.
_NOT_GLOBAL = [
    ipaddress.ip_network(n)
    for n in (
        "192.0.0.0/24",  # IETF protocol assignments (192.0.0.192 and others)
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "64:ff9b:1::/48",  # local-use NAT64
        "fec0::/10",  # deprecated site-local
    )
]


def allowed(ip: IPAddress) -> bool:
    """Whether inferq may call `ip`."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return allowed(ip.ipv4_mapped)
        if ip in _NAT64:
            return allowed(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        embedded = [a for a in (ip.sixtofour, *(ip.teredo or ())) if a is not None]
        return _global(ip) and all(_global(a) for a in embedded)
    return _global(ip)


def _global(ip: IPAddress) -> bool:
    return (
        ip.is_global
        and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)
        and not (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
        and not any(ip.version == n.version and ip in n for n in _NOT_GLOBAL)
    )


class Target(NamedTuple):
    """Where to send a checked webhook: `url` with a host name replaced by the checked address (so
    a DNS answer that changes after the check cannot redirect the request); `host`, what the
    connection pool is chosen by; and the name for the Host header and TLS (SNI and the
    certificate check)."""

    url: str
    host: str
    host_header: str | None = None
    sni_hostname: str | None = None


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the system resolver); OSError or UnicodeError if none."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%")[0] for info in infos]


async def check_url(url: str, *, allow_private: bool, allow_http: bool) -> Target:
    """The address to call, or UnsafeURL with a reason the caller may read."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:  # bad port, unbalanced brackets
        raise UnsafeURL(f"url is malformed: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise UnsafeURL("url must start with https://")
    if parts.scheme == "http" and not allow_http:
        raise UnsafeURL("url must use https (plain http is off; INFERQ_WEBHOOK_ALLOW_HTTP=1 allows it)")
    if not host:
        raise UnsafeURL("url has no host")
    if parts.username or parts.password:
        raise UnsafeURL("url must not carry credentials")
    if port == 0:
        raise UnsafeURL("url has port 0")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if not allow_private and not allowed(literal):
            raise UnsafeURL(REFUSED)
        return Target(url, host)
    if not allow_private and host.lower().rstrip(".") in _METADATA_NAMES:
        raise UnsafeURL(REFUSED)
    try:
        addresses = [ipaddress.ip_address(a) for a in await resolve(host, port or 443)]
    except (OSError, UnicodeError, ValueError) as exc:
        log.info("webhook url refused: %s does not resolve (%s)", host, exc)
        raise UnsafeURL(REFUSED) from None
    refused = [a for a in addresses if not allowed(a)]
    if not addresses or (refused and not allow_private):
        log.info("webhook url refused: %s resolves to %s", host, ", ".join(map(str, refused)) or "nothing")
        raise UnsafeURL(REFUSED)
    return pin(url, addresses[0])


def pin(url: str, ip: IPAddress) -> Target:
    """`url` sent to `ip`, still naming its host (Host header; SNI and certificate for https)."""
    parts = urlsplit(url)
    port, host = parts.port, parts.hostname or ""
    netloc = (f"[{ip}]" if ip.version == 6 else str(ip)) + (f":{port}" if port else "")
    return Target(
        urlunsplit(parts._replace(netloc=netloc)),
        host,
        host + (f":{port}" if port else ""),
        host if parts.scheme == "https" else None,
    )
