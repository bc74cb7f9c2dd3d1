"""Recovery with the real livekit SDK against LoopbackServer: a connect that succeeds after the call gave up on it,
the roster across a rejoin, the reconnect policy (total timeout, `next_delay` override, `join_failure`), and the
token refresher (called before a rejoin, retried until expiry)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from aiohttp import web
from livekit import rtc

from rtcstack import (
    Call,
    CallEvent,
    CallOptions,
    ConnectTimeoutError,
    DisconnectReason,
    InvalidStateError,
    ReconnectPolicy,
    TokenExpiredError,
    TokenRefreshError,
    create_call,
)
from rtcstack.testing import LoopbackServer

if TYPE_CHECKING:
    from conftest import Gated

WAIT = 20.0
FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=50, timeout=60)
NO_SERVER_REFRESH = pytest.mark.parametrize("server", [{"token_refresh": False}], indirect=True)
_T = TypeVar("_T")

CallFactory = Callable[..., Call]


@pytest.fixture
async def make_call(server: LoopbackServer) -> AsyncIterator[CallFactory]:
    calls: list[Call] = []

    def factory(identity: str = "alice", *, ttl: float = 600, margin: float = 60.0, **kw: Any) -> Call:
        options = CallOptions(
            reconnect=kw.pop("policy", FAST),
            token_refresh_margin=margin,
            token_refresh_timeout=kw.pop("refresh_timeout", 5.0),
            rejoin_grace=kw.pop("rejoin_grace", 15.0),
        )
        call = create_call(server.url, server.token(identity, room="demo", ttl=ttl), options=options, **kw)
        calls.append(call)
        return call

    yield factory
    await asyncio.gather(*(c.disconnect() for c in calls))


async def within(what: str, awaitable: Awaitable[_T], timeout: float = WAIT) -> _T:
    """Await `awaitable`, failing with "`what` did not happen" after `timeout` seconds."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"{what} did not happen within {timeout:g} s")


def expect(call: Call, name: Any, timeout: float = WAIT) -> asyncio.Future[CallEvent]:
    return asyncio.ensure_future(call.wait_for(name, timeout=timeout))


async def attempt(call: Call, n: int) -> None:
    """Return once the call is in reconnect attempt `n` or later (bounded by WAIT)."""

    async def reach() -> None:
        while call.reconnect_attempt < n:
            await call.wait_for("reconnecting")

    await within(f"reconnect attempt {n}", reach())


# -- a connect the call gave up on -------------------------------------------------------------------------------


async def test_a_cancelled_connect_whose_room_connects_later_closes_it(gated: Gated) -> None:
    server, gate = await gated(1, abandoned=False)
    call = create_call(server.url, server.token("alice", room="demo"))
    task = asyncio.ensure_future(call.connect())
    await within("the join reaching the server", gate.arrived.wait())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (call.connection_state, call.disconnect_reason) == ("disconnected", "cancelled")
    gate.release.set()  # the SDK's connect now succeeds: the call must close that Room all the same
    await within("the late Room's session being served and ended", gate.served.wait())
    await call.disconnect()
    assert not call.room.isconnected() and server.participants("demo") == []


async def test_a_timed_out_connect_whose_sdk_retry_connects_later_closes_it(gated: Gated) -> None:
    server, gate = await gated(1, abandoned=True)  # the first attempt hangs; the SDK's next one gets through
    call = create_call(server.url, server.token("alice", room="demo"))
    with pytest.raises(ConnectTimeoutError):
        await call.connect(timeout=1.0)
    assert (call.connection_state, call.disconnect_reason) == ("disconnected", "connect_timeout")
    await within("the SDK's retry being served and ended", gate.served.wait())
    await call.disconnect()
    assert not call.room.isconnected() and server.participants("demo") == []


# -- the roster across a reconnect -------------------------------------------------------------------------------


async def test_joins_and_leaves_during_a_rejoin_are_emitted_once_back(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    """Who joined meanwhile is told at once; who is gone gets `rejoin_grace` to come back (after a server's death
    everyone joins again at their own pace) and is told gone after it."""
    bob, call = make_call("bob"), make_call(rejoin_grace=0.5)
    await bob.connect()
    await call.connect()
    roster: list[tuple[str, str, str]] = []
    for name in ("participant_joined", "participant_left"):
        call.on(name, lambda p, name=name: roster.append((name, p.identity, call.connection_state)))
    back = expect(call, "reconnected")
    server.refuse_joins(count=1000, status=503, identity="alice")
    await server.leave("alice", reason="server_shutdown")
    await attempt(call, 2)  # the call rejoins with a fresh Room, refused for now

    await server.add_participant("demo", "carol")
    await bob.disconnect()
    assert roster == []
    server.refuse_joins(count=0)
    left = expect(call, "participant_left")
    await back
    assert roster == [("participant_joined", "carol", "connected")]
    assert [p.identity for p in call.participants] == ["bob", "carol"]

    assert (await left).args[0].identity == "bob"
    assert [p.identity for p in call.participants] == ["carol"]


# -- the reconnect policy ----------------------------------------------------------------------------------------


async def test_the_policy_ends_on_its_total_timeout(server: LoopbackServer, make_call: CallFactory) -> None:
    policy = ReconnectPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=None, timeout=1.0)
    call = make_call(policy=policy)
    await call.connect()
    attempts: list[int] = []
    call.on("reconnecting", attempts.append)
    ended = expect(call, "disconnected")
    server.refuse_joins(count=1000, status=503, identity="alice")
    await server.leave("alice", reason="server_shutdown")
    assert (await ended).reason == "network_error"
    assert len(attempts) >= 2


async def test_a_next_delay_override_sets_the_schedule(server: LoopbackServer, make_call: CallFactory) -> None:
    asked: list[tuple[int, str]] = []

    class TwoQuickTries(ReconnectPolicy):
        def next_delay(self, attempt: int, elapsed: float, cause: DisconnectReason) -> float | None:
            asked.append((attempt, cause))
            return 0.01 if attempt <= 2 else None

    call = make_call(policy=TwoQuickTries(max_attempts=None, timeout=None))
    await call.connect()
    ended = expect(call, "disconnected")
    server.refuse_joins(count=1000, status=503, identity="alice")
    await server.leave("alice", reason="server_shutdown")
    assert (await ended).reason == "network_error"
    assert asked == [(1, "server_shutdown"), (2, "join_failure"), (3, "join_failure")]  # each failure's reason


async def test_join_failure_from_the_sdk_leads_to_a_rejoin(server: LoopbackServer, make_call: CallFactory) -> None:
    call = make_call()
    await call.connect()
    first = call.room
    sdk_reasons: list[int] = []
    first.on("disconnected", sdk_reasons.append)
    attempts: list[int] = []
    call.on("reconnecting", attempts.append)
    back = expect(call, "reconnected")
    server.refuse_joins(count=1, status=401, identity="alice")  # the SDK's own restart is refused: it gives up
    await server.leave("alice", reason="unknown", action="reconnect")
    await back
    assert sdk_reasons == [rtc.DisconnectReason.JOIN_FAILURE]
    assert attempts[:2] == [1, 2] and call.room is not first
    assert call.connection_state == "connected" and server.participants("demo") == ["alice"]


# -- the token refresher -----------------------------------------------------------------------------------------


async def test_a_rejoin_with_an_expired_token_waits_for_the_refresher() -> None:
    """The refresher is slow and the token has expired when the SDK gives up: the rejoin must wait for the fresh
    token. The server would still take the expired one (LiveKit's leeway), so a rejoin that did not wait would reach
    it at once with that token; `quiet` (many rejoin delays and connect times) passes with no signal connect."""
    quiet = 3.0
    server = LoopbackServer(token_refresh=False, ping_interval=1, ping_timeout=15)
    joins: list[str | None] = []
    arrived = asyncio.Event()

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in ("/rtc", "/rtc/v1"):
            joins.append(request.headers.get("Authorization"))
            arrived.set()
        response: web.StreamResponse = await handler(request)
        return response

    app = server.build_app()
    app.middlewares.append(record)
    await server.start(app)
    called, release = asyncio.Event(), asyncio.Event()
    fresh = server.token("alice", room="demo", ttl=600)

    async def slow_refresher() -> str:
        called.set()
        await release.wait()
        return fresh

    options = CallOptions(reconnect=FAST, token_refresh_margin=4, token_refresh_timeout=WAIT)
    call = create_call(
        server.url, server.token("alice", room="demo", ttl=6), token_refresher=slow_refresher, options=options
    )
    try:
        await call.connect()
        await within("the refresher being called at the margin", called.wait())
        await asyncio.sleep(max(0.0, call.token_expires_at.timestamp() - time.time()) + 0.05)  # the token expires
        arrived.clear()
        back = expect(call, "reconnected")
        await server.leave("alice", reason="server_shutdown")
        await attempt(call, 1)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(arrived.wait(), quiet)
        assert not arrived.is_set(), "the rejoin joined with the expired token instead of waiting for the refresher"
        release.set()
        await back
        assert joins[-1] == f"Bearer {fresh}", "the rejoin did not join with the refreshed token"
    finally:
        release.set()
        await call.disconnect()
        await server.close()


@NO_SERVER_REFRESH
async def test_a_failing_refresh_is_retried_until_expiry(server: LoopbackServer, make_call: CallFactory) -> None:
    tries: list[int] = []

    def refresher() -> str:
        tries.append(1)
        raise RuntimeError("auth backend down")

    call = make_call(ttl=5, margin=3, token_refresher=refresher)
    before = call.token_expires_at
    failures: list[Exception] = []
    three = asyncio.get_running_loop().create_future()

    def failed(error: Exception) -> None:
        failures.append(error)
        if len(failures) == 3 and not three.done():
            three.set_result(None)

    call.on("token_refresh_failed", failed)
    await call.connect()
    await within("a third refresh attempt (retries with backoff until expiry)", three)
    assert all(isinstance(e, TokenRefreshError) for e in failures) and len(tries) == len(failures)
    assert call.token_expires_at == before and call.connection_state == "connected"


# -- a token expired or short-lived at connect ---------------------------------------------------------------


async def test_an_expired_token_without_refresher_fails_before_any_room(gated: Gated) -> None:
    server, gate = await gated(0)
    call = create_call(server.url, server.token("alice", room="demo", ttl=-5))
    with pytest.raises(TokenExpiredError):
        await call.connect()
    assert call.disconnect_reason == "token_expired" and gate.count == 0
    with pytest.raises(InvalidStateError):
        call.room  # noqa: B018  (no Room was ever made)
    await call.disconnect()


async def test_an_expired_token_calls_the_refresher_before_joining(gated: Gated) -> None:
    server, gate = await gated(0)
    call = create_call(
        server.url,
        server.token("alice", room="demo", ttl=-5),
        token_refresher=lambda: server.token("alice", room="demo", ttl=600),
    )
    order: list[str] = []
    for name in ("token_expired", "token_refreshed", "connected"):
        call.on(name, lambda *_, name=name: order.append(name))
    await call.connect()
    assert order == ["token_expired", "token_refreshed", "connected"] and gate.count == 1
    assert server.participants("demo") == ["alice"]
    await call.disconnect()


@NO_SERVER_REFRESH
async def test_short_lived_refreshed_tokens_do_not_make_a_tight_loop(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    """Each token lives less than the refresh margin: the next refresh comes halfway through what is left of it,
    not at once (a tight loop would have called the refresher many times during one server round trip)."""
    calls: list[int] = []

    def refresher() -> str:
        calls.append(1)
        return server.token("alice", room="demo", ttl=40)

    call = make_call(ttl=30, margin=60, token_refresher=refresher)
    await call.connect()
    assert len(calls) == 1  # inside the margin from the start: refreshed before joining
    quality = expect(call, "connection_quality_changed")
    await server.set_connection_quality("alice", "good")
    await quality
    assert len(calls) == 1


@NO_SERVER_REFRESH
async def test_a_disconnected_call_neither_warns_nor_refreshes(make_call: CallFactory) -> None:
    """Its token enters the margin after the call ended: no token_expired, no refresher call."""
    calls: list[int] = []
    call = make_call(ttl=30, margin=27, token_refresher=lambda: calls.append(1) or "unused")
    seen: list[str] = []
    for name in ("token_expired", "token_refreshed", "token_refresh_failed"):
        call.on(name, lambda *_, name=name: seen.append(name))
    await call.connect()
    await call.disconnect()
    due = call.token_expires_at.timestamp() - 27  # 2 to 3 s after connect: the timer is set to then
    await asyncio.sleep(max(0.0, due - time.time()) + 0.2)  # the moment it was due has passed
    assert seen == [] and calls == []
