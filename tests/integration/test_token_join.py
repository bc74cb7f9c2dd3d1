"""A join whose token is inside the refresh margin but still valid asks the refresher once and goes ahead whatever
it answers (issue 13), with the real livekit SDK against LoopbackServer. The server pushes no token
(``token_refresh=False``) unless a test pushes one, so the app's refresher is the only source of fresh ones. Where
it matters which token a join sends, a middleware records the bearer of every signal connect."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from rtcstack import Call, CallEvent, CallOptions, ReconnectPolicy, TokenRefreshError, create_call
from rtcstack.testing import LoopbackServer

WAIT = 20.0
FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=20, timeout=60)
LEEWAY = 1.0
"""Seconds the server accepts a token past its exp in the last test (LiveKit's 60 s would make it a minute long)."""

NO_SERVER_REFRESH = pytest.mark.parametrize("server", [{"token_refresh": False}], indirect=True)
SHORT_LEEWAY = pytest.mark.parametrize("server", [{"token_refresh": False, "token_leeway": LEEWAY}], indirect=True)


class Refresher:
    """A refresher that always fails: it returns a token for another identity (refused as such), or hangs."""

    def __init__(self, server: LoopbackServer, *, hangs: bool = False) -> None:
        self.server = server
        self.hangs = hangs
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.hangs:
            await asyncio.sleep(3600)
        return self.server.token("mallory", room="demo", ttl=600)


class Recorder:
    """The call's events in order (through `events()`, registered at once), and a bounded wait for the n-th of one."""

    SHOWN = ("token_expired", "token_refresh_failed", "token_refreshed", "connected", "reconnecting", "reconnected")

    def __init__(self, call: Call) -> None:
        self.events: list[CallEvent] = []
        self._changed = asyncio.Event()
        self._stream = call.events()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for event in self._stream:
            self.events.append(event)
            self._changed.set()

    def names(self) -> list[str]:
        """The names of the events about tokens and connection, in order (``disconnected`` included)."""
        return [event.name for event in self.events if event.name in (*self.SHOWN, "disconnected")]

    async def wait(self, name: str, count: int = 1, timeout: float = WAIT) -> None:
        async def reach() -> None:
            while self.names().count(name) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(reach(), timeout)
        except asyncio.TimeoutError:
            pytest.fail(f"{name} was not emitted {count} time(s) within {timeout} s; events: {self.names()}")


CallFactory = Callable[..., Call]


@pytest.fixture
async def make_call(server: LoopbackServer) -> AsyncIterator[CallFactory]:
    calls: list[Call] = []

    def factory(refresher: Refresher, *, ttl: float, margin: float = 60.0, refresh_timeout: float = 2.0) -> Call:
        options = CallOptions(reconnect=FAST, token_refresh_margin=margin, token_refresh_timeout=refresh_timeout)
        token = server.token("alice", room="demo", ttl=ttl)
        call = create_call(server.url, token, token_refresher=refresher, options=options)
        calls.append(call)
        return call

    yield factory
    await asyncio.gather(*(c.disconnect() for c in calls))


def seconds_left(call: Call) -> float:
    return call.token_expires_at.timestamp() - time.time()


@NO_SERVER_REFRESH
@pytest.mark.parametrize("hangs", [False, True], ids=["wrong-identity", "hangs-past-the-refresh-timeout"])
async def test_connect_with_a_valid_token_and_a_failing_refresher_joins(
    server: LoopbackServer, make_call: CallFactory, hangs: bool
) -> None:
    """An 8 s token (inside the 60 s margin): the refresher is asked once and fails (a hanging one is cut by the
    1 s refresh timeout, which here comes before the join's own bound), and connect() joins with the token it has;
    the refresh goes on failing in the background."""
    refresher = Refresher(server, hangs=hangs)
    call = make_call(refresher, ttl=8, refresh_timeout=1.0)
    recorder = Recorder(call)
    await call.connect()
    assert call.connection_state == "connected"
    assert seconds_left(call) > 0
    await recorder.wait("connected")
    names = recorder.names()
    assert names[0] == "token_expired", names
    if not hangs:  # a hanging refresher's answer (a timeout) comes at about the time the join goes ahead
        assert "token_refresh_failed" in names[: names.index("connected")], names
    await recorder.wait("token_refresh_failed", count=2)  # retried in the background while connected
    assert refresher.calls >= 2
    errors = [event.error for event in recorder.events if event.name == "token_refresh_failed"]
    assert all(isinstance(error, TokenRefreshError) for error in errors)
    assert "token_refreshed" not in recorder.names() and call.connection_state == "connected"


@NO_SERVER_REFRESH
async def test_connect_with_a_hanging_refresher_joins_at_half_the_tokens_remaining_life(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    """The join's own bound: with a refresh timeout (30 s) past the token's life (8 s), the join waits for the
    refresher at most half of what is left of the token, then goes ahead while the refresher still hangs. Without
    that bound it waits for the refresher until connect's own deadline (20 s) and fails."""
    refresher = Refresher(server, hangs=True)
    call = make_call(refresher, ttl=8, refresh_timeout=30.0)
    recorder = Recorder(call)
    await call.connect()
    assert call.connection_state == "connected" and seconds_left(call) > 0
    await recorder.wait("connected")
    assert recorder.names() == ["token_expired", "connected"]  # the refresher has not answered yet
    assert refresher.calls == 1


@NO_SERVER_REFRESH
async def test_rejoin_with_a_valid_token_and_a_failing_refresher_rejoins(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    """The token enters the margin while connected and the refresher keeps failing; the server ends the session
    (transient), and the rejoin asks the refresher once and rejoins with the still-valid token."""
    refresher = Refresher(server)
    call = make_call(refresher, ttl=16, margin=12)
    recorder = Recorder(call)
    await call.connect()
    assert recorder.names() == ["connected"]  # outside the margin at connect: no refresh
    await recorder.wait("token_refresh_failed")  # the margin began; the background refresh failed
    asked_before = refresher.calls
    await server.leave("alice", reason="server_shutdown")
    await recorder.wait("reconnected")
    names = recorder.names()
    rejoin = names[names.index("reconnecting") :]
    assert rejoin[-1] == "reconnected" and "token_refresh_failed" in rejoin, names
    assert refresher.calls > asked_before
    assert call.connection_state == "connected" and seconds_left(call) > 0
    assert "disconnected" not in names


@SHORT_LEEWAY
async def test_a_token_the_server_no_longer_accepts_ends_the_call_on_a_cut_signal(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    """Past exp + the server's leeway, with a refresher that never succeeds: the signal socket is cut, the SDK's
    resume with the dead token is refused, the call's rejoin finds no fresh token, and the call ends token_expired."""
    refresher = Refresher(server)
    call = make_call(refresher, ttl=4)
    recorder = Recorder(call)
    await call.connect()
    await asyncio.sleep(max(0.0, seconds_left(call) + LEEWAY + 0.5))  # until the server refuses the token
    await server.drop_signal("alice")
    await recorder.wait("disconnected", timeout=60)
    assert call.disconnect_reason == "token_expired", recorder.names()
    assert "reconnecting" in recorder.names()


@pytest.mark.parametrize("leeway", [-1.0, float("inf"), float("nan")])
def test_the_server_refuses_a_bad_token_leeway(leeway: float) -> None:
    with pytest.raises(ValueError, match="token_leeway"):
        LoopbackServer(token_leeway=leeway)


@contextlib.asynccontextmanager
async def recording(**options: Any) -> AsyncIterator[tuple[LoopbackServer, list[str]]]:
    """A started LoopbackServer (``options`` as for the `server` fixture) and the token of every signal connect to
    it, in order."""
    bearers: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in ("/rtc", "/rtc/v1"):
            bearers.append(request.headers.get("Authorization", "").removeprefix("Bearer "))
        response: web.StreamResponse = await handler(request)
        return response

    server = LoopbackServer(ping_interval=1, ping_timeout=15, departure_timeout=5.0, **options)
    app = server.build_app()
    app.middlewares.append(record)
    await server.start(app)
    try:
        yield server, bearers
    finally:
        await server.close()


@pytest.mark.parametrize("answer", ["fresh", "wrong-identity", "hangs"])
async def test_a_join_inside_the_margin_sends_the_best_token_it_has(answer: str) -> None:
    """An 8 s token (inside the 60 s margin): the join sends the refresher's token when it gives a good one in time,
    and the token it has when the refresher gives a token for someone else or does not answer in time."""
    async with recording(token_refresh=False) as (server, bearers):
        token = server.token("alice", room="demo", ttl=8)
        fresh = server.token("alice", room="demo", ttl=600)

        async def refresher() -> str:
            if answer == "hangs":
                await asyncio.sleep(3600)
            return fresh if answer == "fresh" else server.token("mallory", room="demo", ttl=600)

        options = CallOptions(reconnect=FAST, token_refresh_timeout=1.0)
        call = create_call(server.url, token, token_refresher=refresher, options=options)
        try:
            await call.connect()
            assert server.participants("demo") == ["alice"]
            named = {token: "the app's", fresh: "the refreshed"}
            best = "the refreshed" if answer == "fresh" else "the app's"
            assert [named.get(bearer, "another") for bearer in bearers] == [best]
        finally:
            await call.disconnect()


async def test_a_rejoin_sends_the_token_the_server_pushed() -> None:
    """The server pushes a token (as LiveKit does) and the one the app gave expires; a token is refused 0.5 s past
    its exp, so only the pushed one can rejoin: the rejoin must send it, with no refresher to ask."""
    async with recording(token_refresh=False, token_leeway=0.5) as (server, bearers):
        call = create_call(server.url, server.token("alice", room="demo", ttl=3), options=CallOptions(reconnect=FAST))
        try:
            await call.connect()
            dead_at = time.time() + seconds_left(call) + 0.5  # when the server refuses the app's token
            refreshed = asyncio.ensure_future(call.wait_for("token_refreshed", timeout=WAIT))
            pushed = await server.refresh_token("alice", ttl=600)
            await refreshed
            await asyncio.sleep(max(0.0, dead_at - time.time()))
            back = asyncio.ensure_future(call.wait_for("reconnected", timeout=WAIT))
            await server.leave("alice", reason="server_shutdown")
            await back
            named = {bearers[0]: "the app's", pushed: "the pushed"}
            assert [named.get(bearer, "another") for bearer in bearers] == ["the app's", "the pushed"]
        finally:
            await call.disconnect()
