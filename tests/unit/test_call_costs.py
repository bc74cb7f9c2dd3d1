"""What the pump waits for and redoes, pinned without timings (the figures are in bench/ and BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from livekit import api, rtc

from rtcstack._call import Call
from rtcstack._options import CallOptions, ReconnectPolicy
from rtcstack._tokens import decode_token
from tests.fakes import FakeParticipant


class LateRoom:
    """Connected when `connect()` returns, like `rtc.Room`, but its CONN_CONNECTED event waits for `late()`:
    the SDK delivers it behind every Room's queued FFI events, long after `connect()` under load."""

    def __init__(self, present: list[str]) -> None:
        self.handlers: dict[str, list[Callable[..., Any]]] = {}
        self.local_participant = FakeParticipant("me", sid="PA_me")
        self.remote_participants = {identity: FakeParticipant(identity) for identity in present}

    def on(self, event: str, callback: Callable[..., Any] | None = None) -> Callable[..., Any]:
        assert callback is not None
        self.handlers.setdefault(event, []).append(callback)
        return callback

    def emit(self, event: str, *args: Any) -> None:
        for handler in self.handlers.get(event, []):
            handler(*args)

    def late(self) -> None:
        self.emit("connection_state_changed", rtc.ConnectionState.CONN_CONNECTED)

    async def connect(self, url: str, token: str, options: rtc.RoomOptions | None = None) -> None:
        await asyncio.sleep(0)

    async def disconnect(self) -> None:
        return None


def make_call(rooms: list[LateRoom]) -> Call:
    token = (
        api.AccessToken("devkey", "a-secret-long-enough-for-hs256-signing")
        .with_identity("me")
        .with_grants(api.VideoGrants(room_join=True, room="demo"))
        .with_ttl(timedelta(seconds=600))
        .to_jwt()
    )

    def factory() -> LateRoom:
        rooms.append(LateRoom(["bob"]))
        return rooms[-1]

    options = CallOptions(reconnect=ReconnectPolicy(initial_delay=0.0, max_delay=0.0))
    return Call("ws://fake", token, decode_token(token), token_refresher=None, options=options, _room_factory=factory)


async def test_connect_returns_with_room_connect_not_with_its_late_event() -> None:
    rooms: list[LateRoom] = []
    call = make_call(rooms)
    seen: list[str] = []
    call.on("connected", lambda: seen.append("connected"))
    call.on("reconnected", lambda: seen.append("reconnected"))
    await call.connect(timeout=5)
    assert call.connection_state == "connected" and seen == ["connected"]
    assert [p.identity for p in call.participants] == ["bob"] and call.local_participant is not None
    rooms[0].late()
    assert call.connection_state == "connected" and seen == ["connected"]
    await call.disconnect()


async def test_rejoin_is_reconnected_when_the_fresh_room_connects() -> None:
    rooms: list[LateRoom] = []
    call = make_call(rooms)
    await call.connect(timeout=5)
    rooms[0].late()
    back = asyncio.ensure_future(call.wait_for("reconnected", timeout=5))
    rooms[0].emit("disconnected", rtc.DisconnectReason.SIGNAL_CLOSE)
    await back
    assert len(rooms) == 2 and call.connection_state == "connected" and call.reconnect_attempt == 0
    assert [p.identity for p in call.participants] == ["bob"]
    rooms[1].late()
    assert call.connection_state == "connected"
    await call.disconnect()
