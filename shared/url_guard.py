"""Refuses webhook URLs that would make inferq call into its own network (SSRF): loopback,
private, link-local (cloud metadata at 169.254.169.254 included), shared, multicast, reserved
and unspecified addresses, whether written literally or reached through a hostname. Checked when
an endpoint is registered and again before every delivery, since DNS answers change."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from shared.errors import UnsafeURL

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_METADATA_NAMES = {"metadata.google.internal", "metadata"}


def _blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for attr, what in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local (cloud metadata)"),
        ("is_private", "private"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_unspecified", "unspecified"),
    ):
        if getattr(ip, attr):
            return what
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared (carrier-grade NAT)"
    return None


class Target(NamedTuple):
    """Where to send a checked webhook: `url` with the host replaced by the checked address (so a
    DNS answer that changes after the check cannot redirect the request), and the original name
    for the Host header and TLS (SNI and certificate checks)."""

    url: str
    host_header: str | None = None
    sni_hostname: str | None = None


async def check_url(url: str, *, allow_private: bool, allow_http: bool) -> Target:
    """The address to call, or UnsafeURL with a reason a user can act on."""
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
    if allow_private:
        return Target(url)
    if host.lower().rstrip(".") in _METADATA_NAMES:
        raise UnsafeURL(f"{host} is a cloud metadata service")
    try:
        addresses = [ipaddress.ip_address(host)]
        literal = True
    except ValueError:
        literal = False
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UnsafeURL(f"{host} does not resolve ({getattr(exc, 'strerror', None) or exc})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for ip in addresses:
        why = _blocked(ip)
        if why:
            raise UnsafeURL(
                f"{host} resolves to {ip}, a {why} address; webhooks may not call private networks "
                "(INFERQ_WEBHOOK_ALLOW_PRIVATE=1 allows it)"
            )
    return Target(url) if literal else pin(url, addresses[0])


def pin(url: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Target:
    """`url` sent to `ip`, still naming its host (Host header; SNI and certificate for https)."""
    parts = urlsplit(url)
    port, host = parts.port, parts.hostname or ""
    netloc = (f"[{ip}]" if ip.version == 6 else str(ip)) + (f":{port}" if port else "")
    return Target(
        urlunsplit(parts._replace(netloc=netloc)),
        host + (f":{port}" if port else ""),
        host if parts.scheme == "https" else None,
    )
