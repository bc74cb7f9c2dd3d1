"""Rejoin and token lifecycle with the real livekit SDK, one fault per test: on LoopbackServer, and on livekit-server
where the fault comes from outside the server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from rtcstack import Call, CallEvent, CallOptions, ReconnectPolicy, TokenRefreshError, create_call
from rtcstack.testing import LiveKitServer, LoopbackServer
from tests.calls import within
from tests.servers import BOTH, AnyServer, force_rejoin, listed

WAIT = 20.0
FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=20, timeout=60)
NO_SERVER_REFRESH = pytest.mark.parametrize("server", [{"token_refresh": False}], indirect=True)

CallFactory = Callable[..., Call]


@pytest.fixture
async def make_call(server: AnyServer) -> AsyncIterator[CallFactory]:
    calls: list[Call] = []

    def factory(identity: str = "alice", *, ttl: float = 600, margin: float = 60.0, **kw: Any) -> Call:
        options = CallOptions(
            reconnect=kw.pop("policy", FAST),
            token_refresh_margin=margin,
            token_refresh_timeout=kw.pop("refresh_timeout", 2.0),
        )
        call = create_call(server.url, server.token(identity, room="demo", ttl=ttl), options=options, **kw)
        calls.append(call)
        return call

    yield factory
    await asyncio.gather(*(c.disconnect() for c in calls))


def expect(call: Call, name: Any, timeout: float = WAIT) -> asyncio.Future[CallEvent]:
    return asyncio.ensure_future(call.wait_for(name, timeout=timeout))


def collect(call: Call, name: Any) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    call.on(name, lambda *args: seen.append(args))
    return seen


async def test_transient_server_leave_rejoins_through_refused_joins(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    bob = make_call("bob")
    await bob.connect()
    call = make_call()
    await call.connect()
    attempts = collect(call, "reconnecting")
    joined = collect(call, "participant_joined")
    left = collect(call, "participant_left")
    reconnected = expect(call, "reconnected")
    server.refuse_joins(count=4, status=503, identity="alice")
    await server.leave("alice", reason="server_shutdown")
    await reconnected
    assert [a[0] for a in attempts][:2] == [1, 2] and len(attempts) >= 2
    assert call.connection_state == "connected" and call.reconnect_attempt == 0
    assert [p.identity for p in call.participants] == ["bob"]
    assert joined == [] and left == []
    assert server.participants("demo") == ["bob", "alice"]


@pytest.mark.servers(*BOTH)
async def test_sdk_gives_up_then_the_call_rejoins(server: AnyServer, make_call: CallFactory) -> None:
    """The SDK's own resume budget (~30 s of refused resumes) runs out; the call rejoins with a fresh Room."""
    call = make_call()
    await call.connect()
    first_room = call.room
    attempts = collect(call, "reconnecting")
    reconnected = expect(call, "reconnected", timeout=90)
    server.refuse_joins(count=1000, status=503, identity="alice")
    await server.drop_signal("alice")
    await _attempt(call, 2, timeout=90)  # the second attempt is the first rejoin
    server.refuse_joins(count=0)
    await reconnected
    assert [a[0] for a in attempts][:2] == [1, 2]
    assert call.room is not first_room and call.connection_state == "connected"


async def test_terminal_reason_during_rejoin_ends_the_call(server: LoopbackServer, make_call: CallFactory) -> None:
    call = make_call()
    await call.connect()
    ended = expect(call, "disconnected")
    server.refuse_joins(count=1000, status=401, identity="alice")
    await server.leave("alice", reason="server_shutdown")
    event = await ended
    assert event.reason == "auth_rejected"


async def test_policy_exhausted_is_network_error(server: LoopbackServer, make_call: CallFactory) -> None:
    call = make_call(policy=ReconnectPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05))
    await call.connect()
    ended = expect(call, "disconnected", timeout=60)
    server.refuse_joins(count=1000, status=503, identity="alice")
    await server.leave("alice", reason="server_shutdown")
    event = await ended
    assert event.reason == "network_error"


@NO_SERVER_REFRESH
async def test_expired_token_at_rejoin_with_a_refresher_recovers(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    refreshed: list[str] = []

    def refresher() -> str:
        token = server.token("alice", room="demo", ttl=600)
        refreshed.append(token)
        return token

    call = make_call(ttl=2, margin=0.5, token_refresher=refresher)
    expiring, renewed = expect(call, "token_expired"), expect(call, "token_refreshed")
    await call.connect()
    await expiring
    event = await renewed
    assert len(refreshed) == 1 and event.expires_at == call.token_expires_at
    await asyncio.sleep(2.0)  # the first token has expired now; the rejoin must use the refreshed one
    reconnected = expect(call, "reconnected")
    await server.leave("alice", reason="server_shutdown")
    await reconnected
    assert call.connection_state == "connected"


@NO_SERVER_REFRESH
async def test_expired_token_at_rejoin_without_refresher_ends_token_expired(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    call = make_call(ttl=1.5, margin=0.2)
    await call.connect()
    await asyncio.sleep(max(0.0, call.token_expires_at.timestamp() - time.time()) + 0.1)
    ended = expect(call, "disconnected")
    await server.leave("alice", reason="server_shutdown")
    event = await ended
    assert event.reason == "token_expired"


def raises() -> str:
    raise RuntimeError("auth backend down")


async def hangs() -> str:
    await asyncio.sleep(3600)
    return "never"


BAD_REFRESHERS: dict[str, Callable[[LoopbackServer], Callable[[], Any]]] = {
    "raises": lambda server: raises,
    "hangs": lambda server: hangs,
    "garbage": lambda server: lambda: "not-a-jwt",
    "returns None": lambda server: lambda: None,
    "another identity": lambda server: lambda: server.token("mallory", room="demo", ttl=600),
    "another room": lambda server: lambda: server.token("alice", room="elsewhere", ttl=600),
}


@NO_SERVER_REFRESH
@pytest.mark.parametrize("kind", list(BAD_REFRESHERS))
async def test_bad_refresher_is_refused_and_the_old_token_kept(
    server: LoopbackServer, make_call: CallFactory, kind: str
) -> None:
    call = make_call(ttl=2, margin=1.5, token_refresher=BAD_REFRESHERS[kind](server), refresh_timeout=0.3)
    before = call.token_expires_at
    failed = expect(call, "token_refresh_failed")
    await call.connect()
    event = await failed
    assert isinstance(event.error, TokenRefreshError)
    assert call.token_expires_at == before
    assert call.connection_state == "connected"
    await asyncio.sleep(max(0.0, call.token_expires_at.timestamp() - time.time()) + 0.1)
    ended = expect(call, "disconnected")
    await server.leave("alice", reason="server_shutdown")
    assert (await ended).reason == "token_expired"


@pytest.mark.servers(*BOTH)
async def test_server_refreshed_token_carries_a_rejoin(server: AnyServer, make_call: CallFactory) -> None:
    """No app refresher: the token LiveKit pushes at join is the one the rejoin uses after the app's expired."""
    call = make_call(ttl=2, margin=0.5)
    refreshed = expect(call, "token_refreshed")
    await call.connect()
    event = await refreshed
    assert event.expires_at is not None and event.expires_at == call.token_expires_at
    await asyncio.sleep(2.2)
    reconnected = expect(call, "reconnected")
    await force_rejoin(server, "alice")
    await reconnected


async def test_disconnect_during_the_rejoin_loop_stops_it(server: LoopbackServer, make_call: CallFactory) -> None:
    call = make_call(policy=ReconnectPolicy(initial_delay=0.2, max_delay=0.5, max_attempts=None, timeout=None))
    await call.connect()
    second = asyncio.ensure_future(_attempt(call, 2))
    server.refuse_joins(count=1000, status=503, identity="alice")
    await server.leave("alice", reason="server_shutdown")
    await second
    assert call.connection_state == "reconnecting"
    await call.disconnect()
    assert call.disconnect_reason == "client_initiated"
    tasks = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert not [t for t in tasks if "Call._" in repr(t.get_coro())]
    assert not call.room.isconnected()  # and with no task of the call left, nothing can rejoin later
    assert "alice" not in server.participants("demo")


async def _attempt(call: Call, n: int, timeout: float = WAIT) -> None:
    async def reach() -> None:
        while call.reconnect_attempt < n:
            await call.wait_for("reconnecting")

    try:
        await asyncio.wait_for(reach(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"reconnect attempt {n} did not happen within {timeout:g} s")


@pytest.mark.servers(*BOTH)
async def test_a_room_deleted_while_resuming_is_joined_anew(server: AnyServer, make_call: CallFactory) -> None:
    """As LiveKit: the leave sent while the signal is down is lost; the resume finds no session and is told to
    reconnect in full, which joins the room again (a new one of that name)."""
    call = make_call()
    await call.connect()
    reconnected, reconnecting = expect(call, "reconnected"), expect(call, "reconnecting")
    await server.drop_signal("alice")
    await reconnecting
    await server.delete_room("demo")
    await reconnected
    assert call.connection_state == "connected" and call.disconnect_reason is None
    assert await listed(server, "demo") == ["alice"]


@pytest.mark.servers("livekit")  # the process itself goes down
async def test_a_server_down_longer_than_the_sdk_waits_is_rejoined_once_it_is_back(
    server: LiveKitServer, make_call: CallFactory
) -> None:
    """livekit-server is killed; the SDK's resume and full restarts fail until it gives up, the call's own rejoins
    go on by its policy, and the first one after the server is back (same ports, rooms gone) gets in."""
    patient = ReconnectPolicy(initial_delay=0.05, max_delay=0.5, max_attempts=None, timeout=90)
    bob = make_call("bob", policy=patient)
    await bob.connect()
    call = make_call(policy=patient)
    await call.connect()
    first_room = call.room
    reconnected, bob_back = expect(call, "reconnected", timeout=90), expect(bob, "reconnected", timeout=90)
    await server.kill()
    await _attempt(call, 2, timeout=90)  # the SDK gave up: the call's first rejoin
    await server.restart()
    await reconnected
    assert call.room is not first_room and call.connection_state == "connected"
    await within("bob back in the room too", bob_back)
    assert await listed(server, "demo") == ["alice", "bob"]
