"""Refuses webhook URLs that would make inferq call into its own network (SSRF): loopback,
private, link-local (cloud metadata at 169.254.169.254 included), shared, multicast, reserved
and unspecified addresses, whether written literally or reached through a hostname. Checked when
an endpoint is registered and again before every delivery, since DNS answers change."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_METADATA_NAMES = {"metadata.google.internal", "metadata"}


class UnsafeURL(ValueError):
    pass


def _blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for attr, what in (("is_loopback", "loopback"), ("is_link_local", "link-local (cloud metadata)"),
                       ("is_private", "private"), ("is_multicast", "multicast"), ("is_reserved", "reserved"),
                       ("is_unspecified", "unspecified")):
        if getattr(ip, attr):
            return what
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared (carrier-grade NAT)"
    return None


async def check_url(url: str, *, allow_private: bool, allow_http: bool) -> None:
    """Raise UnsafeURL with a reason a user can act on."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise UnsafeURL("url must start with https://")
    if parts.scheme == "http" and not allow_http:
        raise UnsafeURL("url must use https (plain http is off; INFERQ_WEBHOOK_ALLOW_HTTP=1 allows it)")
    host = parts.hostname
    if not host:
        raise UnsafeURL("url has no host")
    if parts.username or parts.password:
        raise UnsafeURL("url must not carry credentials")
    if allow_private:
        return
    if host.lower().rstrip(".") in _METADATA_NAMES:
        raise UnsafeURL(f"{host} is a cloud metadata service")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UnsafeURL(f"{host} does not resolve ({exc.strerror})") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for ip in addresses:
        why = _blocked(ip)
        if why:
            raise UnsafeURL(f"{host} resolves to {ip}, a {why} address; webhooks may not call private networks "
                            "(INFERQ_WEBHOOK_ALLOW_PRIVATE=1 allows it)")
