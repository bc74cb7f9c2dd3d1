"""The signal socket of a session: an ordered outbox with one writer; and the one `ServerInfo` the server sends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from ._wire import BadRequest, decode_request

__all__ = ["PROTOCOL_VERSION", "SERVER_VERSION", "Channel", "server_info"]

logger = logging.getLogger("rtcstack.testing")

_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)

SERVER_VERSION = "1.9.0"
PROTOCOL_VERSION = 16


def server_info() -> pm.ServerInfo:
    """What the server says of itself in a JoinResponse and a ReconnectResponse."""
    return pm.ServerInfo(
        edition=pm.ServerInfo.Standard, version=SERVER_VERSION, protocol=PROTOCOL_VERSION, node_id="loopback"
    )


class Channel:
    """One signal websocket: an ordered outbox drained by a writer task, which closes the socket at the end.

    Messages are encoded when queued, so later changes to the bookkeeping never alter what was already sent.
    """

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, label: str) -> None:
        self.ws = ws
        self.label = label
        self._request = request
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.ending = False
        self._writer = asyncio.create_task(self._drain())

    def put(self, frame: bytes) -> None:
        if not self.ending:
            self._outbox.put_nowait(frame)

    def finish(self) -> None:
        """Close the socket once what is queued has been written."""
        if not self.ending:
            self.ending = True
            self._outbox.put_nowait(None)

    def abort(self) -> None:
        """Drop the connection at once: no close frame, nothing more written (a network failure, as seen)."""
        self.ending = True
        self._writer.cancel()
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    async def requests(self, timeout: float) -> AsyncIterator[pr.SignalRequest]:
        """The client's requests, until the socket closes, goes ``timeout`` seconds without a message (then it is
        dropped) or sends a frame that is no SignalRequest (then it is closed)."""
        while not self.ending:
            try:
                msg = await self.ws.receive(timeout=timeout)
            except asyncio.TimeoutError:
                logger.debug("%s: no message for %s s, dropping the socket", self.label, timeout)
                self.abort()
                return
            if msg.type in _ENDED:
                return
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                logger.debug("%s: ignored a %s frame", self.label, msg.type.name)
                continue
            try:
                yield decode_request(msg.data)
            except BadRequest as exc:
                logger.info("%s: %s; closing the socket", self.label, exc)
                self.finish()
                return

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    async def _drain(self) -> None:
        try:
            while (frame := await self._outbox.get()) is not None:
                await self.ws.send_bytes(frame)
        except ConnectionError:
            return
        await self.ws.close()
