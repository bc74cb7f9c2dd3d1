"""Fixtures for the integration suite: a server and real ``livekit.rtc.Room`` clients that record events.

The ``server`` fixture is a LoopbackServer, or, for a test marked ``@pytest.mark.servers("loopback", "livekit")``
(module-wide through ``pytestmark``), one run on each: a LoopbackServer and a real livekit-server (`LiveKitServer`,
found as $LIVEKIT_SERVER_BIN; scripts/test sets it). A failing test on livekit-server shows the server's log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from livekit import rtc

from rtcstack import Call, create_call
from rtcstack.testing import LiveKitServer, LoopbackServer
from tests.calls import CallFactory
from tests.servers import AnyServer

WAIT = 15.0
"""Upper bound for any single expected event (never reached when things work)."""

_EVENTS = (
    "connection_state_changed",
    "connected",
    "disconnected",
    "reconnecting",
    "reconnected",
    "token_refreshed",
    "participant_connected",
    "participant_active",
    "participant_disconnected",
    "participant_metadata_changed",
    "participant_name_changed",
    "participant_attributes_changed",
    "connection_quality_changed",
    "track_published",
    "track_muted",
    "track_unmuted",
    "active_speakers_changed",
)


@dataclass
class Client:
    """A real Room and the events it emitted, in order."""

    identity: str
    room: rtc.Room
    events: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, name: str, *args: Any) -> None:
        self.events.append((name, args))
        self._changed.set()

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def count(self, name: str) -> int:
        return sum(1 for event, _ in self.events if event == name)

    async def wait_count(self, name: str, count: int, timeout: float = WAIT) -> None:
        """Wait until ``name`` was emitted at least ``count`` times in all."""

        async def scan() -> None:
            while self.count(name) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(scan(), timeout)
        except asyncio.TimeoutError:
            pytest.fail(f"{self.identity}: {name} was not emitted {count} times within {timeout:g} s")

    async def wait_for(
        self, name: str, predicate: Callable[..., bool] = lambda *args: True, timeout: float = WAIT
    ) -> tuple[Any, ...]:
        """The args of the first ``name`` event (already seen or coming) whose args satisfy ``predicate``."""

        async def scan() -> tuple[Any, ...]:
            seen = 0
            while True:
                for event, args in self.events[seen:]:
                    if event == name and predicate(*args):
                        return args
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except asyncio.TimeoutError:
            pytest.fail(f"{self.identity}: no {name} event (as expected) within {timeout:g} s; saw {self.names()}")


Connect = Callable[..., Awaitable[Client]]
Gated = Callable[..., Awaitable[tuple[LoopbackServer, "Gate"]]]


_LIVEKIT_LOG = pytest.StashKey[LiveKitServer]()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that uses ``server`` on the kinds its ``servers`` marker names (LoopbackServer by default)."""
    if "server_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("servers")
        metafunc.parametrize("server_kind", marker.args if marker is not None else ("loopback",))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test on livekit-server gets the tail of the server's log in its report."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    server = item.stash.get(_LIVEKIT_LOG, None)
    if report.failed and server is not None:
        try:
            text = server.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            text = [f"(unreadable: {exc})"]
        tail = "\n".join(line[:300] for line in text[-80:])  # a line can hold a whole SDP
        report.sections.append((f"livekit-server log {server.log_path} (last 80 lines)", tail))


@pytest.fixture
async def server(
    request: pytest.FixtureRequest, server_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AnyServer]:
    """A started server of `server_kind`. Override a LoopbackServer's constructor arguments with
    ``parametrize("server", [{...}], indirect=True)``."""
    if server_kind == "livekit":
        async with LiveKitServer(departure_timeout=5.0, log_dir=tmp_path_factory.mktemp("livekit")) as srv:
            request.node.stash[_LIVEKIT_LOG] = srv
            yield srv
        return
    options: dict[str, Any] = {"ping_interval": 1, "ping_timeout": 15, "departure_timeout": 5.0}
    options.update(getattr(request, "param", {}))
    async with LoopbackServer(**options) as lsrv:
        yield lsrv


@pytest.fixture
async def connect(server: AnyServer) -> AsyncIterator[Connect]:
    """``await connect("alice", room="demo", options=None, token=None)``: a connected Client, closed at teardown."""
    clients: list[Client] = []

    async def _connect(
        identity: str, room: str = "demo", options: rtc.RoomOptions | None = None, token: str | None = None
    ) -> Client:
        client = Client(identity, rtc.Room())
        for name in _EVENTS:
            client.room.on(name, lambda *args, name=name: client.record(name, *args))
        clients.append(client)
        await client.room.connect(server.url, token or server.token(identity, room=room), options or rtc.RoomOptions())
        return client

    yield _connect
    await asyncio.gather(*(c.room.disconnect() for c in clients))


class Gate:
    """An aiohttp middleware for LoopbackServer that holds the first `hold` signal connects until `release`.

    `arrived` is set when a signal connect reached the server; `served` when one was upgraded and has ended (the
    handler of a signal websocket returns when its session does). A held connect whose client gave up meanwhile
    (`abandoned`, or its socket closed) is answered 503 on release instead of being served.
    """

    def __init__(self, hold: int, *, abandoned: bool) -> None:
        self.hold, self.abandoned = hold, abandoned
        self.arrived, self.release, self.served = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.count = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path not in ("/rtc", "/rtc/v1"):
            response: web.StreamResponse = await handler(request)
            return response
        self.count += 1
        self.arrived.set()
        if self.count <= self.hold:
            await self.release.wait()
            transport = request.transport
            if self.abandoned or transport is None or transport.is_closing():  # its client gave up on it
                return web.Response(status=503, text="held by the test")
        response = await handler(request)
        if isinstance(response, web.WebSocketResponse):
            self.served.set()
        return response


@pytest.fixture
async def gated() -> AsyncIterator[Gated]:
    """``await gated(hold, abandoned=...)``: a started LoopbackServer whose first `hold` signal connects wait at a
    `Gate`; the gate is released and the server closed at teardown."""
    started: list[tuple[LoopbackServer, Gate]] = []

    async def start(hold: int, *, abandoned: bool = False) -> tuple[LoopbackServer, Gate]:
        server = LoopbackServer(ping_interval=1, ping_timeout=15, departure_timeout=5.0)  # as the `server` fixture
        gate = Gate(hold, abandoned=abandoned)
        app = server.build_app()
        app.middlewares.append(gate.middleware)
        await server.start(app)
        started.append((server, gate))
        return server, gate

    yield start
    for server, gate in started:
        gate.release.set()
        await server.close()


@pytest.fixture
async def make_call(server: AnyServer) -> AsyncIterator[CallFactory]:
    """``make_call("alice", room="demo", **create_call_kwargs)``; every call is disconnected at teardown."""
    calls: list[Call] = []

    def factory(identity: str, room: str = "demo", *, ttl: float = 600, **kw: Any) -> Call:
        call = create_call(server.url, server.token(identity, room=room, ttl=ttl), **kw)
        calls.append(call)
        return call

    yield factory
    await asyncio.gather(*(c.disconnect() for c in calls))
