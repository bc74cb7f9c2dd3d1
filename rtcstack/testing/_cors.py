"""CORS on every HTTP endpoint of the loopback server, answered as livekit-server answers it.

LiveKit allows every origin (it relies on tokens, not origins): a request with an ``Origin`` gets
``Access-Control-Allow-Origin`` set to that origin and ``Access-Control-Expose-Headers: *``, whatever its status, so
a page from another origin reads the 401 of ``/rtc/validate`` instead of failing to fetch. A preflight (``OPTIONS``
with ``Access-Control-Request-Method``) is answered 204 before any route or token check, allowing the requested
method (one of OPTIONS, HEAD, GET, POST, PATCH, DELETE) and headers, cached for a day.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["enable_cors"]

_METHODS: Final = frozenset({"OPTIONS", "HEAD", "GET", "POST", "PATCH", "DELETE"})
_MAX_AGE: Final = "86400"
_PREFLIGHT_VARY: Final = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def enable_cors(app: web.Application) -> None:
    """Answer preflights and add CORS headers to every response of ``app`` (websocket upgrades included)."""
    app.middlewares.append(_answer_preflight)
    app.on_response_prepare.append(_add_headers)


def _is_preflight(request: web.BaseRequest) -> bool:
    return request.method == "OPTIONS" and bool(request.headers.get("Access-Control-Request-Method"))


@web.middleware
async def _answer_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_preflight(request):
        return web.Response(status=204)
    return await handler(request)


async def _add_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    origin = request.headers.get("Origin", "")
    headers = response.headers
    if _is_preflight(request):
        headers.add("Vary", _PREFLIGHT_VARY)
        method = request.headers["Access-Control-Request-Method"]
        if not origin or method not in _METHODS:
            return
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Methods"] = method
        requested = request.headers.get("Access-Control-Request-Headers", "")
        if requested:
            headers["Access-Control-Allow-Headers"] = requested
        headers["Access-Control-Max-Age"] = _MAX_AGE
        return
    headers.add("Vary", "Origin")
    if origin and request.method in _METHODS:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = "*"
