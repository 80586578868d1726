"""Abuse limits at the HTTP doors: who is asking (client address, API key), and the 429 answer.

The buckets themselves are ``storage/limits.py`` behind the coordinator's ``limiter``, so
every worker sharing Redis shares them. Bucket names are keyed hashes (the ``contact`` key over a
namespaced value): no address, key or username is stored in Redis.

* **Agency API**: a bucket per API key (``SURVEYBOT_API_RATE_PER_SECOND`` / ``_BURST``, or the
  agency's entry in ``SURVEYBOT_API_RATE_BY_AGENCY``); a missing, unknown or revoked key takes a
  token from its client address's bucket (``SURVEYBOT_API_BAD_KEY_*``), and once that is spent the
  address gets 429 instead of 401. A valid key is never held back by other clients' failures.
* **Public results**: a bucket per client address (``SURVEYBOT_PUBLIC_RATE_PER_SECOND`` /
  ``_BURST``) for the page and its open data, which need no key.
* **Client address**: the peer address, or, when the peer is a trusted proxy
  (``SURVEYBOT_TRUSTED_PROXIES``), the right-most ``X-Forwarded-For`` entry that is not one.
  IPv6 clients are counted per /64, the block one subscriber usually holds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from bot.forwarded import from_trusted_proxy
from bot.http_errors import error_response
from settings import Settings
from storage.limits import Decision, RateLimiter
from storage.models import Agency
from storage.pseudonym import KeyRing, token_digest


class HasSettings(Protocol):
    @property
    def settings(self) -> Settings: ...


@dataclass(frozen=True, slots=True)
class Doors:
    """What the HTTP doors need to count requests: the settings (rates, trusted proxies), the
    key that names buckets, and the shared limiter. Nothing else of the runtime."""

    settings: Settings
    keyring: KeyRing
    limiter: RateLimiter


def client_address(request: web.BaseRequest, source: HasSettings) -> str:
    """The client's address (an IPv6 client's /64), as the limits count it."""
    remote = request.remote or ""
    try:
        peer = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:64] or "unknown"
    networks = source.settings.trusted_proxy_networks
    if from_trusted_proxy(request, networks):
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
        for hop in reversed([h.strip() for h in forwarded.split(",")]):
            try:
                candidate = ipaddress.ip_address(hop)
            except ValueError:
                break  # a malformed entry: trust nothing further left
            peer = candidate
            if not any(candidate in net for net in networks):
                break
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((peer, 64), strict=False))
    return str(peer.ipv4_mapped if isinstance(peer, ipaddress.IPv6Address) else peer)


def bucket(doors: Doors, kind: str, *parts: str) -> str:
    """A bucket name for ``kind`` that names nobody: a keyed hash of the parts."""
    value = "\x1f".join(parts)
    return f"{kind}:{doors.keyring.pseudonym('contact', f'limit:{kind}:{value}').digest[:32]}"


def too_many(decision: Decision, error: str, detail: str) -> web.Response:
    """429 with the JSON error body and ``Retry-After`` in whole seconds."""
    response = error_response(429, error, detail, retry_after=int(decision.retry_after_header))
    response.headers["Retry-After"] = decision.retry_after_header
    return response


def presented_key(request: web.BaseRequest) -> str:
    """The API key the request carries, as ``bot.api`` reads it (Bearer, else X-Api-Key)."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        key = request.headers.get("X-Api-Key", "")
    return key.strip()


async def limit_api_key(
    doors: Doors, agency: Agency, request: web.BaseRequest
) -> web.Response | None:
    """Take one request from the key's bucket: None when allowed, else the 429 answer."""
    settings = doors.settings
    if not settings.rate_limits_enabled:
        return None
    rate, burst = settings.agency_rates.get(
        agency.code, (settings.api_rate_per_second, settings.api_burst)
    )
    # The key's stored hash (SHA-256), shortened: the bucket of this key, whatever its agency.
    name = f"api-key:{token_digest(presented_key(request))[:32]}"
    decision = await doors.limiter.take(name, rate, burst)
    if decision.allowed:
        return None
    return too_many(
        decision, "rate_limited", f"at most {rate:g} requests per second per API key; retry later"
    )


async def limit_bad_key(doors: Doors, request: web.BaseRequest) -> web.Response | None:
    """A request without a valid key: count it against its address; the 429 once spent."""
    settings = doors.settings
    if not settings.rate_limits_enabled:
        return None
    name = bucket(doors, "api-bad-key", client_address(request, doors))
    decision = await doors.limiter.take(
        name, settings.api_bad_key_rate_per_second, settings.api_bad_key_burst
    )
    if decision.allowed:
        return None
    return too_many(
        decision, "too_many_bad_keys", "too many requests without a valid API key; retry later"
    )


async def limit_public(doors: Doors, request: web.BaseRequest) -> Decision | None:
    """Take one request of the public results from its client's bucket: None when allowed,
    else the refusal (the page answers it politely, the open data as JSON)."""
    settings = doors.settings
    if not settings.rate_limits_enabled:
        return None
    name = bucket(doors, "public", client_address(request, doors))
    decision = await doors.limiter.take(
        name, settings.public_rate_per_second, settings.public_burst
    )
    return None if decision.allowed else decision
