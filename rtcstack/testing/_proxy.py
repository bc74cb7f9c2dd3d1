"""A TCP front for real LiveKit servers: faults injected on the signal path, from outside the server.

`SignalProxy` listens on a free local port and pipes every connection, unchanged, to an upstream that
`SignalProxy.upstream` chooses per connection (one server, or a live node of a cluster). It reads only the head of
each HTTP request: a signal connect (``/rtc`` or ``/rtc/v1``) is recorded under the identity of its bearer token
(decoded, not verified: the server does that), so `drop_signal` can cut it, and `refuse` can answer it with an HTTP
status before the server sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

import jwt

from .._tasks import Tasks
from ._wire import bearer_token

__all__ = ["SignalProxy"]

logger = logging.getLogger("rtcstack.testing")

_SIGNAL_PATHS = ("/rtc", "/rtc/v1")
_VALIDATE_PATHS = ("/rtc/validate", "/rtc/v1/validate")
_MAX_HEAD = 64 * 1024
_HEAD_TIMEOUT = 10.0
_CHUNK = 64 * 1024


@dataclass
class _Refusal:
    count: int
    status: int
    identity: str | None


@dataclass
class _Head:
    raw: bytes
    path: str
    identity: str | None
    room: str | None


@dataclass(eq=False)
class _Link:
    """One piped connection: both transports, so a fault can abort them together."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


@dataclass(eq=False)
class _Signal:
    link: _Link
    room: str | None


@dataclass
class _State:
    refusal: _Refusal | None = None
    rejected: set[str] = field(default_factory=set)
    signals: dict[str, list[_Signal]] = field(default_factory=dict)


class SignalProxy:
    """Pipes connections from ``host:<free port>`` to ``upstream()`` (a ``(host, port)``, or None: refuse with 503)."""

    def __init__(self, upstream: Callable[[], tuple[str, int] | None], host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._state = _State()
        self._links: set[_Link] = set()
        self._tasks = Tasks("signal proxy", logger)

    async def start(self, port: int = 0) -> None:
        """Listen on ``host:port`` (0: a free port)."""
        self._server = await asyncio.start_server(self._serve, self.host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        await self._tasks.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- faults -------------------------------------------------------------------------------------------------

    def refuse(self, count: int, status: int, identity: str | None) -> None:
        """Answer the next ``count`` signal connects (of ``identity``, or anyone) with ``status``."""
        self._state.refusal = _Refusal(count, status, identity) if count else None

    def drop(self, identity: str) -> bool:
        """Abort ``identity``'s open signal connections; False when it has none."""
        signals = self._state.signals.pop(identity, [])
        for signal in signals:
            signal.link.abort()
        return bool(signals)

    def abort_all(self) -> None:
        """Abort every piped connection (what clients see when the machine behind the front dies)."""
        for link in list(self._links):
            link.abort()

    def room_of(self, identity: str) -> str | None:
        """The room named in the token of ``identity``'s open signal connection."""
        for signal in self._state.signals.get(identity, []):
            return signal.room
        return None

    # -- piping -------------------------------------------------------------------------------------------------

    def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.spawn(self._pipe(reader, writer), name="proxy connection")

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self._links.add(link)
        try:
            head = await asyncio.wait_for(_read_head(reader), _HEAD_TIMEOUT)
            if head is None:
                return
            status = self._status_for(head)
            target = self.upstream() if status is None else None
            if status is None and target is None:
                status = HTTPStatus.SERVICE_UNAVAILABLE
            if status is not None or target is None:
                await _answer(writer, status or HTTPStatus.SERVICE_UNAVAILABLE)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*target)
            except OSError:
                await _answer(writer, HTTPStatus.BAD_GATEWAY)
                return
            link.upstream = up_writer
            signal = self._track(head, link)
            try:
                up_writer.write(head.raw)
                await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
            finally:
                if signal is not None and head.identity is not None:
                    self._untrack(head.identity, signal)
        except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._links.discard(link)
            link.abort()

    def _status_for(self, head: _Head) -> int | None:
        state = self._state
        if head.path in _VALIDATE_PATHS and head.identity in state.rejected:
            return HTTPStatus.UNAUTHORIZED
        if head.path not in _SIGNAL_PATHS:
            return None
        refusal = state.refusal
        if refusal is None or (refusal.identity is not None and refusal.identity != head.identity):
            if head.identity is not None:
                state.rejected.discard(head.identity)
            return None
        refusal.count -= 1
        if refusal.count <= 0:
            state.refusal = None
        if refusal.status == HTTPStatus.UNAUTHORIZED and head.identity is not None:
            state.rejected.add(head.identity)  # its validate says 401 too, so the SDK gives up at once
        logger.info("proxy refused a signal connect of %s with %d", head.identity, refusal.status)
        return refusal.status

    def _track(self, head: _Head, link: _Link) -> _Signal | None:
        if head.path not in _SIGNAL_PATHS or head.identity is None:
            return None
        signal = _Signal(link, head.room)
        self._state.signals.setdefault(head.identity, []).append(signal)
        return signal

    def _untrack(self, identity: str, signal: _Signal) -> None:
        signals = self._state.signals.get(identity, [])
        if signal in signals:
            signals.remove(signal)
        if not signals:
            self._state.signals.pop(identity, None)


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(raw) > _MAX_HEAD:
        return None
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    target = urlsplit(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().title()] = value.strip()
    identity, room = _claims(bearer_token(headers, dict(parse_qsl(target.query))))
    return _Head(raw, target.path.rstrip("/") or "/", identity, room)


def _claims(token: str | None) -> tuple[str | None, str | None]:
    if not token:
        return None, None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None, None
    video = claims.get("video")
    room = video.get("room") if isinstance(video, dict) else None
    sub = claims.get("sub")
    return (sub if isinstance(sub, str) else None), (room if isinstance(room, str) else None)


async def _answer(writer: asyncio.StreamWriter, status: int) -> None:
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase} (rtcstack.testing proxy)\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()
    writer.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
