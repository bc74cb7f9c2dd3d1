"""The Call facade with the real livekit SDK, on LoopbackServer and livekit-server: states, roster, quality, reasons,
handlers."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import pytest
from livekit import rtc

from rtcstack import (
    Call,
    CallEvent,
    ConnectError,
    ConnectTimeoutError,
    InvalidStateError,
    create_call,
)
from rtcstack._tokens import decode_token
from rtcstack._translate import UNEXPLAINED_LEAVE_GRACE
from rtcstack.testing import LoopbackServer
from tests.calls import CallFactory, expect, round_trip, until, within
from tests.servers import BOTH, AnyServer, listed, remove, until_listed

if TYPE_CHECKING:
    from conftest import Gated


def recorder(call: Call) -> list[CallEvent]:
    """Every event of `call`, in order, as CallEvents (pull style, drained by a task)."""
    seen: list[CallEvent] = []
    stream = call.events()

    async def drain() -> None:
        async for event in stream:
            seen.append(event)

    task = asyncio.ensure_future(drain())
    seen_task.add(task)
    task.add_done_callback(seen_task.discard)
    return seen


seen_task: set[asyncio.Future[None]] = set()


pytestmark = pytest.mark.servers(*BOTH)


def names(events: list[CallEvent], *only: str) -> list[str]:
    return [e.name for e in events if not only or e.name in only]


async def test_connect_and_disconnect(server: AnyServer, make_call: CallFactory) -> None:
    call = make_call("alice")
    states: list[tuple[str, str]] = []
    call.on("state_changed", lambda new, old: states.append((old, new)))
    assert call.connection_state == "idle"
    await call.connect()
    assert call.connection_state == "connected"
    assert call.local_participant is not None and call.local_participant.identity == "alice"
    assert call.local_participant.is_local and call.participants == []
    assert await listed(server, "demo") == ["alice"]
    assert isinstance(call.room, rtc.Room)
    await call.disconnect()
    assert states == [("idle", "connecting"), ("connecting", "connected"), ("connected", "disconnected")]
    assert call.disconnect_reason == "client_initiated"
    await until_listed(server, "demo", [])


async def test_async_with(server: AnyServer) -> None:
    async with create_call(server.url, server.token("alice", room="demo")) as call:
        assert call.connection_state == "connected"
    assert call.connection_state == "disconnected"


async def test_roster_join_update_leave(server: AnyServer, make_call: CallFactory) -> None:
    alice = make_call("alice")
    await alice.connect()
    events = recorder(alice)
    bob = make_call("bob")
    joining = expect(alice, "participant_joined")
    await bob.connect()
    joined = await joining
    assert joined.participant is not None and joined.participant.identity == "bob"
    assert [p.identity for p in alice.participants] == ["bob"]
    assert [p.identity for p in bob.participants] == ["alice"]
    await bob.room.local_participant.set_metadata("hello")
    await until(lambda: alice.participants[0].metadata == "hello")
    agent = rtc.Room()
    await agent.connect(server.url, server.token("agent", room="demo", name="Agent", kind="agent"))
    await until(lambda: [p.identity for p in alice.participants] == ["bob", "agent"])
    assert alice.participants[1].kind == "agent" and alice.participants[1].name == "Agent"
    leaving = expect(alice, "participant_left")
    await bob.disconnect()
    left = await leaving
    assert left.participant is not None and left.participant.identity == "bob"
    assert [p.identity for p in alice.participants] == ["agent"]
    assert ("participant_updated", "bob") in [
        (e.name, e.participant.identity) for e in events if e.participant is not None
    ]
    await agent.disconnect()


@pytest.mark.servers("loopback")  # scripted quality
async def test_quality_local_and_remote(server: LoopbackServer, make_call: CallFactory) -> None:
    alice, bob = make_call("alice"), make_call("bob")
    await alice.connect()
    await bob.connect()
    await until(lambda: len(alice.participants) == 1)
    assert alice.participants[0].connection_quality == "unknown"
    seen: list[tuple[str, str]] = []
    alice.on("connection_quality_changed", lambda p, q: seen.append((p.identity, q)))
    await server.set_connection_quality("alice", "poor")
    await server.set_connection_quality("bob", "excellent")
    await until(lambda: len(seen) >= 2)
    assert ("alice", "poor") in seen and ("bob", "excellent") in seen
    assert alice.local_participant is not None and alice.local_participant.connection_quality == "poor"
    assert alice.participants[0].connection_quality == "excellent"


TERMINAL = [
    "participant_removed",
    "room_deleted",
    "room_closed",
    "duplicate_identity",
    "user_unavailable",
    "user_rejected",
    "sip_trunk_failure",
    "agent_error",
]


@pytest.mark.servers("loopback")  # a leave with any reason
@pytest.mark.parametrize("reason", TERMINAL)
async def test_server_leave_reason_is_our_string(server: LoopbackServer, make_call: CallFactory, reason: str) -> None:
    call = make_call("alice")
    await call.connect()
    ending = expect(call, "disconnected")
    await server.leave("alice", reason=reason)
    ended = await ending
    assert ended.reason == reason
    assert call.connection_state == "disconnected" and call.disconnect_reason == reason


async def test_removed_by_the_room_service_is_participant_removed(server: AnyServer, make_call: CallFactory) -> None:
    call = make_call("alice")
    await call.connect()
    ending = expect(call, "disconnected")
    await remove(server, "demo", "alice")
    ended = await ending
    assert ended.reason == "participant_removed" and call.disconnect_reason == "participant_removed"


async def test_delete_room(server: AnyServer, make_call: CallFactory) -> None:
    call = make_call("alice")
    await call.connect()
    ending = expect(call, "disconnected")
    await server.delete_room("demo")
    ended = await ending
    assert ended.reason == "room_deleted"


async def test_resume_after_signal_drop_keeps_the_roster(server: AnyServer, make_call: CallFactory) -> None:
    alice, bob = make_call("alice"), make_call("bob")
    await alice.connect()
    await bob.connect()
    await until(lambda: len(alice.participants) == 1)
    events = recorder(alice)
    reconnecting, reconnected = expect(alice, "reconnecting"), expect(alice, "reconnected")
    await server.drop_signal("alice")
    first = await reconnecting
    assert first.attempt == 1
    await reconnected
    assert alice.connection_state == "connected" and alice.reconnect_attempt == 0
    assert [p.identity for p in alice.participants] == ["bob"]
    assert names(events, "participant_joined", "participant_left") == []


async def test_full_restart_has_no_roster_churn(server: AnyServer, make_call: CallFactory) -> None:
    alice, bob = make_call("alice"), make_call("bob")
    await alice.connect()
    await bob.connect()
    await until(lambda: len(alice.participants) == 1)
    events = recorder(alice)
    reconnected = expect(alice, "reconnected")
    await alice.room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT)
    await reconnected
    await round_trip(bob, alice)  # any late re-announcement came before this: it must not show as churn
    await asyncio.sleep(UNEXPLAINED_LEAVE_GRACE)  # the leaves the SDK reported before `reconnected` are decided
    assert names(events, "reconnecting", "reconnected") == ["reconnecting", "reconnected"]
    assert names(events, "participant_joined", "participant_left") == []
    assert [p.identity for p in alice.participants] == ["bob"]


async def test_duplicate_identity(server: AnyServer, make_call: CallFactory) -> None:
    first = make_call("alice")
    await first.connect()
    second = make_call("alice")
    ending = expect(first, "disconnected")
    await second.connect()
    ended = await ending
    assert ended.reason == "duplicate_identity"
    assert second.connection_state == "connected"


async def test_connect_twice_is_an_error(make_call: CallFactory) -> None:
    call = make_call("alice")
    await call.connect()
    with pytest.raises(InvalidStateError):
        await call.connect()
    assert call.connection_state == "connected"


@pytest.mark.servers("loopback")  # the server only mints the token
async def test_timed_out_connect_closes_the_room(server: LoopbackServer) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept and never answer: the signal upgrade hangs
        writer.close()

    black_hole = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    call = create_call(f"ws://127.0.0.1:{port}", server.token("alice", room="demo"))
    try:
        with pytest.raises(ConnectTimeoutError):
            await call.connect(timeout=0.5)
        assert call.connection_state == "disconnected" and call.disconnect_reason == "connect_timeout"
        await call.disconnect()
        assert not call.room.isconnected()
    finally:
        black_hole.close()
        await black_hole.wait_closed()


async def test_cancelled_connect_closes_the_room(gated: Gated) -> None:
    server, gate = await gated(1)
    call = create_call(server.url, server.token("alice", room="demo"))
    task = asyncio.ensure_future(call.connect())
    await within("the join reaching the server", gate.arrived.wait())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert call.disconnect_reason == "cancelled"
    gate.release.set()
    await call.disconnect()
    await until(lambda: server.participants("demo") == [], "alice leaving the server")
    assert not call.room.isconnected()


async def test_disconnect_while_connecting(gated: Gated) -> None:
    server, gate = await gated(1)
    call = create_call(server.url, server.token("alice", room="demo"))
    task = asyncio.ensure_future(call.connect())
    await within("the join reaching the server", gate.arrived.wait())
    disconnecting = asyncio.ensure_future(call.disconnect())
    with pytest.raises(ConnectError) as info:
        await within("connect() ending", task)
    assert info.value.reason == "client_initiated"
    assert call.disconnect_reason == "client_initiated"
    gate.release.set()
    await within("disconnect() returning", disconnecting)
    await until(lambda: server.participants("demo") == [], "alice leaving the server")
    assert not call.room.isconnected()


async def test_bad_token_is_auth_rejected(server: AnyServer) -> None:
    other = LoopbackServer(api_secret="not-the-same-secret-at-all-0123456789")
    token = other.token("alice", room="demo")
    call = create_call(server.url, token)
    with pytest.raises(ConnectError) as info:
        await call.connect()
    assert info.value.reason == "auth_rejected" and call.disconnect_reason == "auth_rejected"
    assert token not in str(info.value)
    await call.disconnect()


async def test_raising_and_async_handlers(
    server: AnyServer, make_call: CallFactory, caplog: pytest.LogCaptureFixture
) -> None:
    call = make_call("alice")
    order: list[str] = []
    done = asyncio.Event()

    def bad() -> None:
        raise RuntimeError("handler bug")

    async def slow() -> None:
        await asyncio.sleep(0.05)
        order.append("async")
        done.set()

    call.on("connected", bad)
    call.on("connected", slow)
    call.on("connected", lambda: order.append("sync"))
    await call.connect()
    await within("the async handler finishing", done.wait())
    assert order == ["sync", "async"]
    assert call.connection_state == "connected"
    assert any(r.name == "rtcstack" and r.exc_info and "handler bug" in str(r.exc_info[1]) for r in caplog.records)


@pytest.mark.parametrize("ttl", [120, 1800])
async def test_the_token_the_server_pushes_at_join(server: AnyServer, ttl: int) -> None:
    """As LiveKit: right after the join the server pushes a token valid for 10 minutes, or until the joining token
    expires if that is later; the call adopts it when it expires later than its own."""
    token = server.token("alice", room="demo", ttl=ttl)
    async with create_call(server.url, token) as call:
        before = call.token_expires_at
        await until(lambda: call.room._token != token, "the server's push at join")  # where the SDK keeps it
        pushed = decode_token(call.room._token).expires_at
        assert pushed >= before and (pushed - datetime.now(timezone.utc)).total_seconds() > 590
        if ttl < 600:
            await until(lambda: call.token_expires_at == pushed, "the call adopting the pushed token")
        else:
            assert call.token_expires_at == before == pushed  # nothing to adopt


@pytest.mark.servers("loopback")  # a push on demand
async def test_server_token_refresh_is_adopted(server: LoopbackServer, make_call: CallFactory) -> None:
    call = make_call("alice", ttl=120)
    before = call.token_expires_at
    refreshed: list[datetime] = []
    call.on("token_refreshed", refreshed.append)
    await call.connect()  # the server also pushes a token at join: its event may come before or after ours
    pushed = await server.refresh_token("alice", ttl=900)
    expected = decode_token(pushed).expires_at
    await until(lambda: expected in refreshed)
    assert expected > before and call.token_expires_at == expected
    assert pushed not in repr(call)


async def test_data_and_tracks_from_a_remote(server: AnyServer, make_call: CallFactory) -> None:
    alice, bob = make_call("alice"), make_call("bob")
    await alice.connect()
    await bob.connect()
    await until(lambda: len(alice.participants) == 1)
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    published = expect(alice, "track_published")
    await bob.room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    event = await published
    assert event.participant is not None and event.participant.identity == "bob"
    assert event.track is not None and event.track.kind == "audio" and event.track.source == "microphone"
    await until(lambda: len(alice.participants[0].tracks) == 1)

    received = expect(alice, "data_received")
    await bob.room.local_participant.publish_data(b"hello alice", topic="chat")
    data = await received
    assert (data.data, data.topic) == (b"hello alice", "chat")
    assert data.participant is not None and data.participant.identity == "bob" and data.participant.tracks
    received = expect(alice, "data_received")
    await bob.room.local_participant.publish_data("no topic")
    data = await received
    assert (data.data, data.topic) == (b"no topic", None)
    assert data.participant is not None and data.participant.identity == "bob"


async def test_an_expired_token_is_refreshed_before_the_join(server: AnyServer) -> None:
    fresh = server.token("alice", room="demo", ttl=600)
    call = create_call(server.url, server.token("alice", room="demo", ttl=-5), token_refresher=lambda: fresh)
    order: list[str] = []
    for name in ("token_expired", "token_refreshed", "connected"):
        call.on(name, lambda *_, name=name: order.append(name))
    async with call:
        assert order[:3] == ["token_expired", "token_refreshed", "connected"]
        assert await listed(server, "demo") == ["alice"]
