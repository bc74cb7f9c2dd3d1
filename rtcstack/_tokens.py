"""Tokens: claims decoded from a LiveKit JWT (signature not verified), the refresh schedule, the refresher
protocol, and ``http_token_refresher``.

rtcstack reads a token only to know who it is for and when it expires; the server verifies it. No message,
log line or repr here ever contains a token: errors name what is wrong, never the value.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, TypeAlias

import httpx
import jwt

from ._errors import ConfigError, TokenError, TokenRefreshError

__all__ = [
    "NOT_BEFORE_LEEWAY",
    "Refresher",
    "TokenClaims",
    "check_refreshed",
    "check_usable",
    "decode_token",
    "http_token_refresher",
    "join_ask_timeout",
    "join_refresh",
    "refresh_delay",
    "refresh_due",
    "run_refresher",
]

Refresher: TypeAlias = Callable[[], str | Awaitable[str]]
"""An app's source of fresh tokens: a plain or ``async`` function of no arguments returning a JWT."""

#: Seconds a token's ``nbf`` may lie in the future (clock skew between the minter and us) and still be usable.
NOT_BEFORE_LEEWAY = 10.0

_PYJWT_ERROR = re.compile(r"Invalid (header|payload|crypto) (padding|string)(: must be a json object)?")


@dataclass(frozen=True)
class TokenClaims:
    """What rtcstack reads from a token: identity (``sub``), room (``video.room``), display name, expiry
    (``exp``, aware UTC), not-before (``nbf``, aware UTC or None) and participant kind (or None)."""

    identity: str
    room: str
    name: str
    expires_at: datetime
    not_before: datetime | None
    kind: str | None


def _decode_error(exc: jwt.PyJWTError) -> TokenError:
    """PyJWT's error in our words (its messages may quote the token's content; ours never do)."""
    found = _PYJWT_ERROR.match(str(exc))
    if found is None:
        return TokenError(f"token is not a valid JWT ({type(exc).__name__})")
    part, what, not_object = found.groups()
    if not_object:
        return TokenError("token header and payload must be JSON objects")
    part = "signature" if part == "crypto" else part
    return TokenError(f"token {part} is not {'JSON' if what == 'string' else 'base64url'}")


def _timestamp(payload: dict[str, Any], claim: str) -> datetime | None:
    value = payload.get(claim)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TokenError(f"token {claim!r} claim is not a number")
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise TokenError(f"token {claim!r} claim is out of range") from None


def decode_token(token: object) -> TokenClaims:
    """Decode a LiveKit JWT's claims without verifying its signature.

    Raises ``TokenError`` for anything that is not a three-part base64url JWT whose payload is a JSON object
    with a numeric ``exp``, a non-empty ``sub`` and a ``video.room`` grant. Validity in time is
    :func:`check_usable`'s job.
    """
    if not isinstance(token, str):
        raise TokenError(f"token must be a str, not {type(token).__name__}")
    if not token.strip():
        raise TokenError("token is empty")
    parts = token.count(".") + 1
    if parts != 3:
        raise TokenError(f"token is not a JWT: expected 3 dot-separated parts, got {parts}")
    if token.endswith("."):  # PyJWT takes an empty signature; LiveKit tokens are always signed
        raise TokenError("token signature is not base64url")
    try:
        # Decode only: every verify_* option follows verify_signature; the times are check_usable's job.
        payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise _decode_error(exc) from None
    expires_at = _timestamp(payload, "exp")
    if expires_at is None:
        raise TokenError("token has no 'exp' claim")
    identity = payload.get("sub")
    if not isinstance(identity, str) or not identity:
        raise TokenError("token has no 'sub' (identity) claim")
    video = payload.get("video")
    room = video.get("room") if isinstance(video, dict) else None
    if not isinstance(room, str) or not room:
        raise TokenError("token has no 'video.room' grant")
    name = payload.get("name")
    kind = payload.get("kind")
    return TokenClaims(
        identity=identity,
        room=room,
        name=name if isinstance(name, str) else "",
        expires_at=expires_at,
        not_before=_timestamp(payload, "nbf"),
        kind=kind if isinstance(kind, str) and kind else None,
    )


def check_usable(claims: TokenClaims, now: datetime, margin: float = 0.0) -> None:
    """Raise ``TokenError`` unless the token is valid at ``now`` and for ``margin`` more seconds.

    Expired (or expiring within ``margin``): reason ``"token_expired"``. ``nbf`` later than ``now`` by more
    than ``NOT_BEFORE_LEEWAY``: reason ``"auth_rejected"`` (the server would refuse it).
    """
    if claims.expires_at - timedelta(seconds=margin) <= now:
        raise TokenError(
            "token has expired" if claims.expires_at <= now else "token expires too soon", reason="token_expired"
        )
    if claims.not_before is not None and claims.not_before - timedelta(seconds=NOT_BEFORE_LEEWAY) > now:
        raise TokenError("token is not valid yet (its 'nbf' is in the future)", reason="auth_rejected")


def refresh_due(claims: TokenClaims, margin: float) -> datetime:
    """When the token enters the refresh margin: ``margin`` seconds before it expires."""
    return claims.expires_at - timedelta(seconds=margin)


def refresh_delay(claims: TokenClaims, now: datetime, margin: float) -> float:
    """Seconds from ``now`` until the token's refresh is due: when it enters the margin, or, for a token that lives
    less than the margin, halfway through what is left of it (so a refresher that hands out such tokens is not
    called in a tight loop)."""
    delay = (refresh_due(claims, margin) - now).total_seconds()
    if delay > 0:
        return delay
    return max(0.0, (claims.expires_at - now).total_seconds() / 2)


def join_refresh(claims: TokenClaims, now: datetime, margin: float) -> Literal["ask", "wait"] | None:
    """What a join (connect or rejoin) does about the refresher before it goes ahead.

    None: the token is outside the refresh margin, join with it. ``"ask"``: inside the margin but not expired, so
    still good to join with: ask the refresher once (its answer, good or bad, bounded by the refresh timeout) and join
    with the best token there is; a failure goes on being retried in the background. ``"wait"``: expired, so only a
    refreshed token can join: wait for the refresh.
    """
    if now < refresh_due(claims, margin):
        return None
    return "wait" if now >= claims.expires_at else "ask"


def join_ask_timeout(claims: TokenClaims, now: datetime, refresh_timeout: float) -> float:
    """How long a join asking the refresher (``"ask"``) waits for its answer: ``refresh_timeout``, and at most half
    of what is left of the token, so that the join still goes ahead with a valid one."""
    left = (claims.expires_at - now).total_seconds()
    return max(0.0, min(refresh_timeout, left / 2))


async def run_refresher(refresher: Refresher, *, timeout: float) -> str:
    """Call ``refresher`` (plain or async) and return its token, or raise ``TokenRefreshError``.

    It fails when the refresher raises (chained), takes longer than ``timeout`` seconds (an async one is
    cancelled; a plain one runs on the event loop and must not block), or returns anything but a non-empty
    str. A ``TokenRefreshError`` from the refresher (e.g. ``http_token_refresher``'s) passes through.
    """
    try:
        result: object = refresher()
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, timeout)
    except TokenRefreshError:
        raise
    except asyncio.TimeoutError:
        raise TokenRefreshError(f"token refresher did not answer within {timeout} s") from None
    except Exception as exc:
        raise TokenRefreshError(f"token refresher raised {type(exc).__name__}") from exc
    if not isinstance(result, str):
        raise TokenRefreshError(f"token refresher returned {type(result).__name__}, not str")
    if not result:
        raise TokenRefreshError("token refresher returned an empty token")
    return result


def check_refreshed(current: TokenClaims, new_token: str) -> TokenClaims:
    """The claims of ``new_token`` if it may replace the current token, else ``TokenRefreshError``.

    It must decode, expire later than the current token, and carry the same identity and room.
    """
    try:
        claims = decode_token(new_token)
    except TokenError as exc:
        raise TokenRefreshError(f"refreshed token is invalid: {exc}") from exc
    if claims.identity != current.identity:
        raise TokenRefreshError("refreshed token is for another identity")
    if claims.room != current.room:
        raise TokenRefreshError("refreshed token is for another room")
    if claims.expires_at <= current.expires_at:
        raise TokenRefreshError("refreshed token does not expire later than the current one")
    return claims


def _is_loopback(host: str) -> bool:
    host = host.rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_token_refresher(
    url: str,
    *,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    field: str = "token",
    timeout: float = 10.0,
    client: httpx.AsyncClient | None = None,
) -> Callable[[], Awaitable[str]]:
    """A refresher that asks an HTTP endpoint for a token: ``method url`` with ``headers`` and the ``json``
    body (if any); the answer must be 2xx with a JSON object whose ``field`` is the token.

    ``url`` must be ``https://``, or ``http://`` to a loopback host (127.0.0.0/8, ::1, localhost); anything
    else is a ``ConfigError`` now. Each call uses ``client`` if given (it stays open), else a client of its
    own that it closes. Failures raise ``TokenRefreshError`` (``status`` set for a non-2xx answer); no
    message contains the response body, the token or the URL's path and query.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError("token refresher URL is invalid") from exc
    if not parsed.host or parsed.scheme not in ("https", "http"):
        raise ConfigError("token refresher URL must be https:// (or http:// to a loopback host)")
    if parsed.scheme == "http" and not _is_loopback(parsed.host):
        raise ConfigError("token refresher URL must use https:// unless the host is loopback")
    if not isinstance(method, str) or not method.isalpha():
        raise ConfigError("token refresher method must be an HTTP method name")
    if not isinstance(field, str) or not field:
        raise ConfigError("token refresher field must be a non-empty str")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ConfigError("token refresher timeout must be a positive number of seconds")
    verb = method.upper()
    header_items = dict(headers or {})
    where = f"{verb} {parsed.scheme}://{parsed.netloc.decode('ascii')}"

    async def send(http: httpx.AsyncClient) -> httpx.Response:
        return await http.request(verb, parsed, headers=header_items, json=json, timeout=timeout)

    async def request() -> httpx.Response:
        if client is not None:
            return await send(client)
        async with httpx.AsyncClient() as own:
            return await send(own)

    async def refresh() -> str:
        try:
            response = await asyncio.wait_for(request(), timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise TokenRefreshError(f"token refresh timed out after {timeout} s ({where})") from None
        except httpx.HTTPError as exc:
            raise TokenRefreshError(f"token refresh request failed: {type(exc).__name__} ({where})") from exc
        status = response.status_code
        if not 200 <= status < 300:
            raise TokenRefreshError(f"token refresh failed: HTTP {status} ({where})", status=status)
        try:
            body = response.json()
        except ValueError:
            raise TokenRefreshError(f"token refresh answer is not JSON ({where})") from None
        token = body.get(field) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenRefreshError(f"token refresh answer has no string {field!r} field ({where})")
        return token

    return refresh
