"""The pump (`Call`) with a fake Room behind the `RoomLike` protocol: no network, no SDK core.

These tests pin how Room callbacks become call events. Every behaviour here is also tested against the real SDK on
LoopbackServer in tests/integration (test_call.py, test_call_events.py, test_call_recovery.py, test_reconnect.py,
and test_secrets.py for the repr); the fake only makes the pump's own bookkeeping cheap to drive and its exact
orderings, delays and loop iterations easy to pin. One exception: a rejoin's Room whose connect ends after the
rejoin gave up on it (the real SDK would then retry that Room's connect on its own, racing the next rejoin for the
same identity, which LoopbackServer cannot order deterministically); the first connect's case is tested for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from livekit import rtc

from rtcstack import _room
from rtcstack._call import Call
from rtcstack._errors import AuthRejectedError, ConnectError, ConnectTimeoutError, InvalidStateError, TokenExpiredError
from rtcstack._options import CallOptions, ReconnectPolicy
from rtcstack._tokens import decode_token
from tests.fakes import FakeParticipant, mint

CONNECTED = rtc.ConnectionState.CONN_CONNECTED
RECONNECTING = rtc.ConnectionState.CONN_RECONNECTING


@dataclass
class FakePublication:
    sid: str
    name: str = "mic"
    kind: int = rtc.TrackKind.KIND_AUDIO
    source: int = rtc.TrackSource.SOURCE_MICROPHONE
    muted: bool = False
    subscribed: bool = True


class FakeRoom:
    """Records handlers; `connect` follows the `script` given by the test."""

    def __init__(self, script: Callable[[FakeRoom], Any] | None = None) -> None:
        self.handlers: dict[str, list[Callable[..., Any]]] = {}
        self.local_participant = FakeParticipant("me", sid="PA_me")
        self.remote_participants: dict[str, FakeParticipant] = {}
        self.script = script
        self.connected = False
        self.disconnects = 0
        self.options: rtc.RoomOptions | None = None

    def on(self, event: str, callback: Callable[..., Any] | None = None) -> Callable[..., Any]:
        assert callback is not None
        self.handlers.setdefault(event, []).append(callback)
        return callback

    def emit(self, event: str, *args: Any) -> None:
        for handler in self.handlers.get(event, []):
            handler(*args)

    async def connect(self, url: str, token: str, options: rtc.RoomOptions | None = None) -> None:
        self.options = options
        if self.script is not None:
            await self.script(self)
        self.connected = True
        asyncio.get_running_loop().call_soon(self.emit, "connection_state_changed", CONNECTED)

    async def disconnect(self) -> None:
        self.disconnects += 1
        self.connected = False

    def add(self, identity: str, **kw: Any) -> FakeParticipant:
        p = FakeParticipant(identity, sid=f"PA_{identity}", **kw)
        self.remote_participants[identity] = p
        return p


class Rooms:
    """A room factory that hands out FakeRooms following successive scripts."""

    def __init__(self, *scripts: Callable[[FakeRoom], Any] | None) -> None:
        self.scripts = list(scripts)
        self.made: list[FakeRoom] = []

    def __call__(self) -> FakeRoom:
        room = FakeRoom(self.scripts.pop(0) if self.scripts else None)
        self.made.append(room)
        return room


def make_call(rooms: Rooms, token: str | None = None, **kw: Any) -> Call:
    token = token or mint()
    refresher = kw.pop("token_refresher", None)
    clock = kw.pop("clock", None)
    options = CallOptions(**kw)
    extra = {"_clock": clock} if clock is not None else {}
    return Call(
        "ws://fake",
        token,
        decode_token(token),
        token_refresher=refresher,
        options=options,
        _room_factory=rooms,
        **extra,
    )


def record(call: Call, *names: str) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    for name in names:
        call.on(name, lambda *args, _n=name: seen.append((_n, *args)))  # type: ignore[call-overload]  # any event
    return seen


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_connect_then_disconnect() -> None:
    rooms = Rooms()
    call = make_call(rooms)
    seen = record(call, "state_changed", "connected", "disconnected")
    assert call.connection_state == "idle" and call.local_participant is None
    await call.connect()
    assert call.connection_state == "connected"
    assert call.local_participant is not None and call.local_participant.is_local
    await call.disconnect()
    assert seen == [
        ("state_changed", "connecting", "idle"),
        ("state_changed", "connected", "connecting"),
        ("connected",),
        ("state_changed", "disconnected", "connected"),
        ("disconnected", "client_initiated"),
    ]
    assert rooms.made[0].disconnects == 1
    assert call.disconnect_reason == "client_initiated"
    await call.disconnect()
    assert rooms.made[0].disconnects == 1


async def test_connect_twice_is_an_error() -> None:
    call = make_call(Rooms())
    await call.connect()
    with pytest.raises(InvalidStateError):
        await call.connect()
    await call.disconnect()


async def test_failed_connect_is_classified_and_ends_the_call() -> None:
    async def refuse(room: FakeRoom) -> None:
        raise rtc.ConnectError("failed to connect: validation failed: 401 Unauthorized")

    call = make_call(Rooms(refuse))
    with pytest.raises(AuthRejectedError) as info:
        await call.connect()
    assert info.value.reason == "auth_rejected"
    assert call.connection_state == "disconnected" and call.disconnect_reason == "auth_rejected"
    await call.disconnect()


async def test_connect_timeout_closes_the_room_after_its_connect_ends() -> None:
    release = asyncio.Event()

    async def slow(room: FakeRoom) -> None:
        await release.wait()

    rooms = Rooms(slow)
    call = make_call(rooms)
    with pytest.raises(ConnectTimeoutError):
        await call.connect(timeout=0.05)
    assert call.disconnect_reason == "connect_timeout"
    release.set()
    await call.disconnect()
    assert rooms.made[0].disconnects == 1


async def test_cancelled_connect_closes_the_room() -> None:
    release = asyncio.Event()

    async def slow(room: FakeRoom) -> None:
        await release.wait()

    rooms = Rooms(slow)
    call = make_call(rooms)
    task = asyncio.create_task(call.connect())
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert call.disconnect_reason == "cancelled"
    release.set()
    await call.disconnect()
    assert rooms.made[0].disconnects == 1


async def test_disconnect_while_connecting() -> None:
    release = asyncio.Event()

    async def slow(room: FakeRoom) -> None:
        await release.wait()

    call = make_call(Rooms(slow))
    task = asyncio.create_task(call.connect())
    await settle()
    closing = asyncio.create_task(call.disconnect())
    with pytest.raises(ConnectError) as info:
        await task
    assert info.value.reason == "client_initiated"
    release.set()
    await closing
    assert call.connection_state == "disconnected"


async def test_roster_quality_tracks_and_data() -> None:
    rooms = Rooms()
    call = make_call(rooms)
    seen = record(
        call,
        "participant_joined",
        "participant_left",
        "participant_updated",
        "connection_quality_changed",
        "track_published",
        "track_muted",
        "data_received",
        "active_speakers_changed",
    )
    await call.connect()
    room = rooms.made[0]
    bob = room.add("bob", name="Bob")
    room.emit("participant_connected", bob)
    bob.metadata = "hi"
    room.emit("participant_metadata_changed", bob, "", "hi")
    bob.connection_quality = rtc.ConnectionQuality.QUALITY_POOR
    room.emit("connection_quality_changed", bob, rtc.ConnectionQuality.QUALITY_POOR)
    room.emit("connection_quality_changed", room.local_participant, rtc.ConnectionQuality.QUALITY_EXCELLENT)
    pub = FakePublication("TR_1")
    bob.track_publications["TR_1"] = pub
    room.emit("track_published", pub, bob)
    pub.muted = True
    room.emit("track_muted", bob, pub)
    room.emit("data_received", rtc.DataPacket(data=b"x", kind=0, participant=bob, topic="chat"))  # type: ignore[arg-type]  # a fake participant
    room.emit("active_speakers_changed", [bob])
    assert [p.identity for p in call.participants] == ["bob"]
    assert call.participants[0].connection_quality == "poor" and call.participants[0].is_speaking
    assert call.participants[0].tracks[0].muted
    del room.remote_participants["bob"]
    bob.disconnect_reason = rtc.DisconnectReason.CLIENT_INITIATED
    room.emit("participant_disconnected", bob)
    await settle()
    await call.disconnect()
    summary = [(e[0], getattr(e[1], "identity", e[1]), *e[2:3]) for e in seen]
    assert [s[:2] for s in summary] == [
        ("participant_joined", "bob"),
        ("participant_updated", "bob"),
        ("connection_quality_changed", "bob"),
        ("connection_quality_changed", "me"),
        ("track_published", "bob"),
        ("track_muted", "bob"),
        ("data_received", b"x"),
        ("active_speakers_changed", seen[7][1]),
        ("participant_left", "bob"),
    ]
    assert [p.identity for p in seen[7][1]] == ["bob"] and seen[7][1][0].is_speaking
    assert seen[2][2] == "poor" and seen[3][2] == "excellent"
    assert seen[6][3] == "chat"


async def test_sdk_resume_is_reconnecting_one_and_holds_the_roster() -> None:
    rooms = Rooms()
    call = make_call(rooms)
    seen = record(call, "reconnecting", "reconnected", "participant_joined", "participant_left")
    await call.connect()
    room = rooms.made[0]
    ann = room.add("ann")
    room.emit("participant_connected", ann)
    # a full restart reports everyone gone (no reason) before RECONNECTING, then re-announces them; cid joins
    del room.remote_participants["ann"]
    room.emit("participant_disconnected", ann)
    await settle()  # under load RECONNECTING may come some loop iterations later
    room.emit("connection_state_changed", RECONNECTING)
    assert call.reconnect_attempt == 1
    await asyncio.sleep(0.3)
    room.remote_participants["ann"] = ann
    room.emit("participant_connected", ann)
    room.emit("participant_connected", room.add("cid"))
    room.emit("connection_state_changed", CONNECTED)
    assert [(e[0], getattr(e[1], "identity", e[1]) if len(e) > 1 else None) for e in seen] == [
        ("participant_joined", "ann"),
        ("reconnecting", 1),
        ("participant_joined", "cid"),
        ("reconnected", None),
    ]
    assert [p.identity for p in call.participants] == ["ann", "cid"]
    await call.disconnect()


@pytest.mark.parametrize(("budget", "attempt"), [(20.0, 5.0), (2.0, 2.0)])
async def test_the_sdk_attempts_take_its_own_default_or_less(budget: float, attempt: float) -> None:
    """Each SDK attempt, of the connect and of its own resumes, gets the SDK's default 5 s, or the call's whole
    deadline when that is shorter: with the whole deadline a resume the server holds (a cluster whose node died)
    was waited for that long rather than retried as a full restart."""
    rooms = Rooms()
    call = make_call(rooms, connect_timeout=budget)
    await call.connect()
    options = rooms.made[0].options
    assert options is not None and options.connect_timeout == attempt
    await call.disconnect()


async def test_after_a_full_restart_the_absent_have_rejoin_grace_to_come_back() -> None:
    """After a server's death everyone joins the room again at their own pace: who is not back when the call is
    gets `rejoin_grace`; who was seen leaving (a reason) during the episode, or is still away then, has left."""
    rooms = Rooms()
    call = make_call(rooms, rejoin_grace=0.2)
    seen = record(call, "participant_joined", "participant_left", "participant_updated", "reconnected")
    await call.connect()
    room = rooms.made[0]
    for identity in ("ann", "bob", "cid"):
        room.emit("participant_connected", room.add(identity))
    room.emit("connection_state_changed", RECONNECTING)
    ann, bob, cid = (room.remote_participants.pop(i) for i in ("ann", "bob", "cid"))
    for gone in (ann, bob):
        room.emit("participant_disconnected", gone)
    cid.disconnect_reason = rtc.DisconnectReason.CLIENT_INITIATED
    room.emit("participant_disconnected", cid)
    room.emit("connection_state_changed", CONNECTED)
    assert [(e[0], e[1].identity if len(e) > 1 else None) for e in seen[3:]] == [
        ("participant_left", "cid"),
        ("reconnected", None),
    ]
    assert [p.identity for p in call.participants] == ["ann", "bob"]
    await asyncio.sleep(0.1)
    room.remote_participants["ann"] = FakeParticipant("ann", sid="PA_ann2")
    room.emit("participant_connected", room.remote_participants["ann"])
    await asyncio.sleep(0.2)
    assert [(e[0], e[1].identity) for e in seen[5:]] == [("participant_updated", "ann"), ("participant_left", "bob")]
    assert [(p.identity, p.sid) for p in call.participants] == [("ann", "PA_ann2")]
    await call.disconnect()


async def test_transient_end_rejoins_with_a_fresh_room() -> None:
    async def refuse(room: FakeRoom) -> None:
        raise rtc.ConnectError("failed to connect: 503 Service Unavailable")

    rooms = Rooms(None, refuse, None)
    policy = ReconnectPolicy(initial_delay=0.0, max_delay=0.0)
    call = make_call(rooms, reconnect=policy)
    seen = record(call, "reconnecting", "reconnected", "disconnected")
    await call.connect()
    first = rooms.made[0]
    first.emit("disconnected", rtc.DisconnectReason.SIGNAL_CLOSE)
    reconnected = await call.wait_for("reconnected", timeout=5)
    assert reconnected.name == "reconnected"
    assert seen == [("reconnecting", 1), ("reconnecting", 2), ("reconnected",)]
    assert len(rooms.made) == 3 and call.room is rooms.made[2]  # type: ignore[comparison-overlap]  # a fake Room
    first.emit("participant_connected", FakeParticipant("stale"))
    assert call.participants == []
    await call.disconnect()


async def test_a_failure_in_a_task_of_the_call_is_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    """The Room a rejoin leaves behind is closed in a task of the call; its close failing is logged once (tests/
    conftest.py fails a test that leaves a task's exception unretrieved)."""
    rooms = Rooms()
    call = make_call(rooms, reconnect=ReconnectPolicy(initial_delay=0.0, max_delay=0.0))
    await call.connect()
    first = rooms.made[0]

    async def broken() -> None:
        raise RuntimeError("the FFI refused")

    first.disconnect = broken  # type: ignore[method-assign]  # a Room whose close fails
    first.emit("disconnected", rtc.DisconnectReason.SIGNAL_CLOSE)
    await call.wait_for("reconnected", timeout=5)
    await settle()
    await call.disconnect()
    failed = [r.getMessage() for r in caplog.records if r.name == "rtcstack" and r.levelname == "ERROR"]
    assert failed == ["call: close a Room failed: RuntimeError: the FFI refused"]


async def test_a_timed_out_rejoin_closes_its_room_when_its_connect_ends() -> None:
    """A rejoin's Room that does not connect within connect_timeout is given up and the next rejoin made; when that
    late connect does end, the Room is closed (not left connected, as a second session of the same identity)."""
    release = asyncio.Event()

    async def late(room: FakeRoom) -> None:
        await release.wait()

    rooms = Rooms(None, late, None)
    call = make_call(rooms, connect_timeout=0.2, reconnect=ReconnectPolicy(initial_delay=0.0, max_delay=0.0))
    await call.connect()
    rooms.made[0].emit("disconnected", rtc.DisconnectReason.SIGNAL_CLOSE)
    await call.wait_for("reconnected", timeout=5)
    assert len(rooms.made) == 3 and rooms.made[1].disconnects == 0  # still connecting
    release.set()
    await call.disconnect()
    assert [room.disconnects for room in rooms.made] == [1, 1, 1]


async def test_rejoin_exhausted_is_network_error() -> None:
    async def refuse(room: FakeRoom) -> None:
        raise rtc.ConnectError("failed to connect: 503")

    rooms = Rooms(None, refuse, refuse)
    call = make_call(rooms, reconnect=ReconnectPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0))
    await call.connect()
    rooms.made[0].emit("disconnected", rtc.DisconnectReason.UNKNOWN_REASON)
    ended = await call.wait_for("disconnected", timeout=5)
    assert ended.reason == "network_error"
    await call.disconnect()


async def test_terminal_reason_ends_the_call() -> None:
    rooms = Rooms()
    call = make_call(rooms)
    await call.connect()
    rooms.made[0].emit("disconnected", rtc.DisconnectReason.ROOM_DELETED)
    assert call.connection_state == "disconnected" and call.disconnect_reason == "room_deleted"
    await call.disconnect()


async def test_disconnect_during_rejoin_stops_it() -> None:
    rooms = Rooms()
    call = make_call(rooms, reconnect=ReconnectPolicy(initial_delay=30.0, max_delay=30.0, jitter=False))
    await call.connect()
    rooms.made[0].emit("disconnected", rtc.DisconnectReason.SIGNAL_CLOSE)
    assert call.connection_state == "reconnecting"
    await call.disconnect()
    assert call.disconnect_reason == "client_initiated"
    assert len(rooms.made) == 1


async def test_expired_token_without_refresher_fails_before_any_room() -> None:
    rooms = Rooms()
    call = make_call(rooms, token=mint(ttl=-10))
    with pytest.raises(TokenExpiredError):
        await call.connect()
    assert rooms.made == [] and call.disconnect_reason == "token_expired"


async def test_expired_token_calls_the_refresher_first() -> None:
    fresh = mint(ttl=600)
    rooms = Rooms()
    call = make_call(rooms, token=mint(ttl=-10), token_refresher=lambda: fresh)
    seen = record(call, "token_expired", "token_refreshed")
    await call.connect()
    assert [e[0] for e in seen] == ["token_expired", "token_refreshed"]
    assert call.token_expires_at == decode_token(fresh).expires_at
    await call.disconnect()


async def test_a_raising_handler_breaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    call = make_call(Rooms())
    after: list[str] = []

    def bad() -> None:
        raise RuntimeError("boom")

    call.on("connected", bad)
    call.on("connected", lambda: after.append("ok"))
    await call.connect()
    assert after == ["ok"] and call.connection_state == "connected"
    logged = [r for r in caplog.records if r.name == "rtcstack" and r.exc_info]
    assert [(type(r.exc_info[1]), str(r.exc_info[1])) for r in logged if r.exc_info] == [(RuntimeError, "boom")]
    await call.disconnect()


def test_repr_shows_no_token() -> None:
    token = mint()
    call = make_call(Rooms(), token=token)
    text = repr(call)
    assert "state=idle" in text and "'demo'" in text and "'me'" in text
    assert token not in text and token.split(".")[1] not in text


async def test_token_timer_warns_once_and_refreshes() -> None:
    first = mint(ttl=120)
    fresh = mint(ttl=600)
    calls: list[int] = []

    async def refresher() -> str:
        calls.append(1)
        return fresh

    margin = (decode_token(first).expires_at - datetime.now(timezone.utc)).total_seconds() - 0.2
    call = make_call(Rooms(), token=first, token_refresher=refresher, token_refresh_margin=margin)
    seen = record(call, "token_expired", "token_refreshed")
    await call.connect()
    assert seen == []
    await call.wait_for("token_refreshed", timeout=5)
    assert [e[0] for e in seen] == ["token_expired", "token_refreshed"] and calls == [1]
    assert call.token_expires_at == decode_token(fresh).expires_at
    await call.disconnect()


async def test_disconnect_cancels_the_token_timer() -> None:
    """The token enters its margin 0.2 s after connect: once disconnected, that moment passes with no warning and
    no refresher call (the timer is cancelled, not left to fire on an ended call)."""
    first = mint(ttl=120)
    calls: list[int] = []

    def refresher() -> str:
        calls.append(1)
        return mint(ttl=600)

    margin = (decode_token(first).expires_at - datetime.now(timezone.utc)).total_seconds() - 0.2
    call = make_call(Rooms(), token=first, token_refresher=refresher, token_refresh_margin=margin)
    seen = record(call, "token_expired", "token_refreshed")
    await call.connect()
    await call.disconnect()
    await asyncio.sleep(0.3)  # the moment it was due passed
    assert seen == [] and calls == []


def test_classifier() -> None:
    classify = _room.classify_connect_error
    assert classify("engine: validation failed: 401", token_expired=False) == ("auth_rejected", False)
    assert classify("401 Unauthorized", token_expired=True) == ("token_expired", False)
    assert classify("Forbidden", token_expired=False) == ("auth_rejected", False)
    assert classify("503 Service Unavailable", token_expired=False) == ("join_failure", True)
    assert classify("connection refused", token_expired=False) == ("join_failure", True)


async def test_participants_present_at_connect_are_seeded_without_events() -> None:
    async def crowd(room: FakeRoom) -> None:
        room.add("ann")
        room.add("bob")

    call = make_call(Rooms(crowd))
    seen = record(call, "participant_joined")
    await call.connect()
    assert [p.identity for p in call.participants] == ["ann", "bob"] and seen == []
    await call.disconnect()
    assert call.participants == []


async def test_a_leave_with_a_reason_is_applied_one_iteration_later() -> None:
    rooms = Rooms()
    call = make_call(rooms)
    await call.connect()
    room = rooms.made[0]
    bob = room.add("bob", disconnect_reason=rtc.DisconnectReason.CLIENT_INITIATED)
    room.emit("participant_connected", bob)
    del room.remote_participants["bob"]
    room.emit("participant_disconnected", bob)
    assert [p.identity for p in call.participants] == ["bob"]
    await settle()
    assert call.participants == []
    await call.disconnect()


async def test_a_leave_without_a_reason_waits_out_a_possible_restart() -> None:
    rooms = Rooms()
    call = make_call(rooms)
    left = record(call, "participant_left")
    await call.connect()
    room = rooms.made[0]
    ann, bob = room.add("ann"), room.add("bob")
    room.emit("participant_connected", ann)
    room.emit("participant_connected", bob)
    leaving = asyncio.ensure_future(call.wait_for("participant_left", timeout=5))
    del room.remote_participants["ann"]
    room.emit("participant_disconnected", ann)
    await settle()
    assert [p.identity for p in call.participants] == ["ann", "bob"] and left == []  # not applied yet
    gone = await leaving
    assert gone.participant is not None and gone.participant.identity == "ann"
    assert [p.identity for p in call.participants] == ["bob"] and len(left) == 1
    del room.remote_participants["bob"]
    room.emit("participant_disconnected", bob)
    await call.disconnect()


async def test_short_lived_refreshed_tokens_do_not_make_a_tight_loop() -> None:
    now = [datetime.now(timezone.utc)]
    calls: list[int] = []

    def refresher() -> str:
        calls.append(1)
        return mint(ttl=10 + len(calls))  # each token lives far less than the 60 s margin

    call = make_call(Rooms(), token=mint(ttl=10), token_refresher=refresher, clock=lambda: now[0])
    await call.connect()
    assert len(calls) == 1  # the first token was inside the margin: refreshed before joining
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(calls) == 1
    await call.disconnect()


def failing_refresher(calls: list[int]) -> Callable[[], str]:
    def refresher() -> str:
        calls.append(1)
        return mint(identity="mallory")  # refused: another identity

    return refresher


async def test_a_join_inside_the_margin_asks_a_failing_refresher_once_and_joins() -> None:
    calls: list[int] = []
    rooms = Rooms()
    call = make_call(rooms, token=mint(ttl=30), token_refresher=failing_refresher(calls))
    seen = record(call, "token_expired", "token_refresh_failed", "connected", "token_refreshed")
    await asyncio.wait_for(call.connect(), 5)
    assert [e[0] for e in seen] == ["token_expired", "token_refresh_failed", "connected"]
    assert calls == [1] and len(rooms.made) == 1
    await call.disconnect()


async def test_a_hanging_refresher_holds_a_join_for_at_most_the_refresh_timeout() -> None:
    async def hangs() -> str:
        await asyncio.sleep(3600)
        return mint()

    call = make_call(Rooms(), token=mint(ttl=30), token_refresher=hangs, token_refresh_timeout=0.2)
    failed = asyncio.ensure_future(call.wait_for("token_refresh_failed", timeout=5))
    await asyncio.wait_for(call.connect(), 5)
    assert call.connection_state == "connected"
    await failed
    await call.disconnect()


async def test_a_join_does_not_wait_for_the_refresher_past_half_of_what_is_left_of_the_token() -> None:
    """A 3 s token and the default 10 s refresh timeout: the join goes ahead while the token is still valid."""

    async def hangs() -> str:
        await asyncio.sleep(3600)
        return mint()

    call = make_call(Rooms(), token=mint(ttl=3), token_refresher=hangs)
    await asyncio.wait_for(call.connect(), 5)
    assert call.connection_state == "connected"
    assert call.token_expires_at > datetime.now(timezone.utc)
    await call.disconnect()


async def test_a_rejoin_inside_the_margin_cuts_the_refresh_backoff_short() -> None:
    """The failed refresh at connect waits 1 s before its retry; a rejoin asks now. With a refresh timeout of
    0.5 s, a rejoin that only waited for the next retry would join before it."""
    calls: list[int] = []
    rooms = Rooms()
    policy = ReconnectPolicy(initial_delay=0.0, max_delay=0.0)
    options = {"reconnect": policy, "token_refresh_timeout": 0.5}
    call = make_call(rooms, token=mint(ttl=30), token_refresher=failing_refresher(calls), **options)
    await call.connect()
    assert calls == [1]
    reconnected = asyncio.ensure_future(call.wait_for("reconnected", timeout=5))
    rooms.made[0].emit("disconnected", rtc.DisconnectReason.SIGNAL_CLOSE)
    await reconnected
    assert calls == [1, 1] and len(rooms.made) == 2
    await call.disconnect()


async def test_an_expired_token_with_a_failing_refresher_fails_the_join() -> None:
    calls: list[int] = []
    rooms = Rooms()
    call = make_call(rooms, token=mint(ttl=-10), token_refresher=failing_refresher(calls))
    with pytest.raises(TokenExpiredError):
        await asyncio.wait_for(call.connect(), 5)
    assert calls == [1] and rooms.made == [] and call.disconnect_reason == "token_expired"


@pytest.mark.parametrize(
    ("failure", "expired", "can_refresh", "expected"),
    [
        (TokenExpiredError("no token"), True, True, ("token_expired", False)),
        (asyncio.TimeoutError(), False, False, ("network_error", True)),
        (rtc.ConnectError("engine: 401 Unauthorized"), False, True, ("auth_rejected", False)),
        (rtc.ConnectError("engine: 401 Unauthorized"), True, False, ("token_expired", False)),
        (rtc.ConnectError("engine: 401 Unauthorized"), True, True, ("token_expired", True)),
        (rtc.ConnectError("503 Service Unavailable"), False, False, ("join_failure", True)),
        (RuntimeError("participant already exists"), False, False, ("unknown", True)),
    ],
    ids=["our-token-error", "timeout", "refused", "expired", "expired-refreshable", "5xx", "undocumented"],
)
def test_one_classification_of_join_failures(
    failure: Exception, expired: bool, can_refresh: bool, expected: tuple[str, bool]
) -> None:
    """Retry or end, for the first connect and every rejoin alike."""
    assert _room.classify_join_failure(failure, token_expired=expired, can_refresh=can_refresh) == expected
