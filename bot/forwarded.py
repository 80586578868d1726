"""What a request's reverse proxy may tell us: the client's address and whether it came over https.

Behind a TLS-terminating proxy the connection aiohttp sees is plain http from the proxy, so
``request.secure`` is false even when the citizen's browser spoke https. The proxy's own headers
(``X-Forwarded-For``, ``X-Forwarded-Proto``, RFC 7239 ``Forwarded``) say what the client used,
but any client can send them too: they are believed only when the peer is one of
``SURVEYBOT_TRUSTED_PROXIES``. Cookies are marked ``Secure`` and HSTS is sent whenever the answer
travels over https by this rule, or the public base URL is https.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _peer(request: web.BaseRequest) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(request.remote or "")
    except ValueError:
        return None


def from_trusted_proxy(request: web.BaseRequest, networks: list[Network]) -> bool:
    """Whether the connection's peer is a configured proxy (whose headers may be believed)."""
    peer = _peer(request)
    return peer is not None and any(peer in net for net in networks)


def forwarded_proto(request: web.BaseRequest) -> str | None:
    """The scheme the nearest proxy reports (right-most entry: the hop that proxy added)."""
    protos = [
        part.strip().lower()
        for header in request.headers.getall("X-Forwarded-Proto", [])
        for part in header.split(",")
    ]
    for header in request.headers.getall("Forwarded", []):
        for element in header.split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.strip().lower() == "proto":
                    protos.append(value.strip().strip('"').lower())
    return protos[-1] if protos else None


def served_over_https(request: web.BaseRequest, settings: Settings) -> bool:
    """Whether the client reached us over https (directly, through a trusted proxy, or by config)."""
    if request.secure or settings.effective_public_base_url.startswith("https://"):
        return True
    if from_trusted_proxy(request, settings.trusted_proxy_networks):
        return forwarded_proto(request) == "https"
    return False
