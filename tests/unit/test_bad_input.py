"""The bad day, no network: bad URLs, tokens, options, refreshers and handlers, methods called at the wrong time,
and an SDK that misbehaves. Each bad input gets a clear `RtcstackError` subclass and message.

The Room is a fake behind the `RoomLike` protocol (as in test_call_pump.py): `connect` runs the script the test
gives it, so a test decides when a connect ends, fails or hangs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from livekit import api, rtc

from rtcstack import CallOptions
from rtcstack._call import Call
from rtcstack._tokens import decode_token

KEY, SECRET = "devkey", "a-secret-long-enough-for-hs256-signing"
URL = "ws://fake"


def mint(identity: str = "me", room: str = "demo", ttl: float = 600) -> str:
    return (
        api.AccessToken(KEY, SECRET)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .with_ttl(timedelta(seconds=ttl))
        .to_jwt()
    )


@dataclass
class FakeParticipant:
    identity: str
    sid: str = ""
    name: str = ""
    kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    state: int = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    track_publications: dict[str, Any] = field(default_factory=dict)
    joined_at: datetime | None = None
    connection_quality: int = rtc.ConnectionQuality.QUALITY_UNKNOWN


Script = Callable[["FakeRoom"], Any]


class FakeRoom:
    """Records handlers and the token it was given; `connect` awaits the test's script (if any), then returns."""

    def __init__(self, script: Script | None = None) -> None:
        self.handlers: dict[str, list[Callable[..., Any]]] = {}
        self.local_participant = FakeParticipant("me", sid="PA_me")
        self.remote_participants: dict[str, FakeParticipant] = {}
        self.script = script
        self.tokens: list[str] = []
        self.disconnects = 0

    def on(self, event: str, callback: Callable[..., Any] | None = None) -> Callable[..., Any]:
        assert callback is not None
        self.handlers.setdefault(event, []).append(callback)
        return callback

    def emit(self, event: str, *args: Any) -> None:
        for handler in self.handlers.get(event, []):
            handler(*args)

    async def connect(self, url: str, token: str, options: rtc.RoomOptions | None = None) -> None:
        self.tokens.append(token)
        if self.script is not None:
            await self.script(self)

    async def disconnect(self) -> None:
        self.disconnects += 1


class Rooms:
    """A room factory handing out FakeRooms that follow successive scripts (no script: connect at once)."""

    def __init__(self, *scripts: Script | None) -> None:
        self.scripts = list(scripts)
        self.made: list[FakeRoom] = []

    def __call__(self) -> FakeRoom:
        room = FakeRoom(self.scripts.pop(0) if self.scripts else None)
        self.made.append(room)
        return room


def make_call(
    rooms: Rooms,
    token: str | None = None,
    *,
    refresher: Callable[[], Any] | None = None,
    clock: Callable[[], datetime] | None = None,
    **options: Any,
) -> Call:
    token = token or mint()
    extra = {"clock": clock} if clock is not None else {}
    return Call(
        URL,
        token,
        decode_token(token),
        token_refresher=refresher,
        options=CallOptions(**options),
        room_factory=rooms,
        **extra,
    )


def record(call: Call, *names: str) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    for name in names:
        call.on(name, lambda *args, _n=name: seen.append((_n, *args)))  # type: ignore[call-overload]  # any event
    return seen


# -- the SDK misbehaves ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ticks", range(1, 12))
async def test_a_cancelled_connect_never_leaves_the_call_connected(ticks: int) -> None:
    """Cancel connect() after `ticks` loop iterations, across the instant the Room's connect returns. Whatever
    the moment, connect() raising CancelledError means the call ended ("cancelled") and its Room is closed: it
    must not stay connected with nobody to close it (a participant left on the server, a Room and tasks leaked)."""
    rooms = Rooms()
    call = make_call(rooms)
    task = asyncio.ensure_future(call.connect())
    for _ in range(ticks):
        await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        assert (call.connection_state, call.disconnect_reason) == ("disconnected", "cancelled")
        await call.disconnect()
        assert [room.disconnects for room in rooms.made] in ([], [1])
    else:
        assert call.connection_state == "connected"
        await call.disconnect()
