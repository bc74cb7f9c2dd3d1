"""A Room.connect() that returns just as the SDK starts a reconnect, with the real SDK on both servers.

The Room's event task starts inside connect() and can report CONN_CONNECTED and CONN_RECONNECTING before the caller
of connect() resumes. The call must neither close that Room (its connect() looked abandoned) nor take connect()'s
return for the end of the reconnect: it stays reconnecting until the Room itself reports CONN_CONNECTED again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit import rtc

from rtcstack import CallOptions
from rtcstack._call import Call
from rtcstack._tokens import decode_token
from tests.servers import BOTH, AnyServer

WAIT = 20.0


@pytest.mark.servers(*BOTH)
async def test_a_reconnect_starting_as_connect_returns_is_not_ended_early(server: AnyServer) -> None:
    made: list[rtc.Room] = []

    class ReconnectingAsItConnects(rtc.Room):
        """A real Room whose first connect() returns only after its own event task saw a reconnect begin."""

        async def connect(self, url: str, token: str, options: rtc.RoomOptions = rtc.RoomOptions()) -> None:  # noqa: B008  (the SDK's own default)
            connected, reconnecting = asyncio.Event(), asyncio.Event()

            def seen(state: int) -> None:
                if state == rtc.ConnectionState.CONN_CONNECTED:
                    connected.set()
                if state == rtc.ConnectionState.CONN_RECONNECTING:
                    reconnecting.set()

            self.on("connection_state_changed", seen)
            refreshed = asyncio.Event()
            self.on("token_refreshed", refreshed.set)
            made.append(self)
            await super().connect(url, token, options)
            if len(made) > 1:  # a rejoin's fresh Room (if the SDK gives the resume up) connects plainly
                return
            await asyncio.wait_for(connected.wait(), WAIT)  # the Room's late CONN_CONNECTED event, as in the wild
            await asyncio.wait_for(refreshed.wait(), WAIT)
            await server.drop_signal("alice")
            await asyncio.wait_for(reconnecting.wait(), WAIT)

    token = server.token("alice", room="demo")
    call = Call(
        server.url,
        token,
        decode_token(token),
        token_refresher=None,
        options=CallOptions(),
        _room_factory=ReconnectingAsItConnects,
    )
    states_at_reconnected: list[Any] = []
    call.on("reconnected", lambda: states_at_reconnected.append(call.room.connection_state))
    try:
        reconnected = asyncio.ensure_future(call.wait_for("reconnected", timeout=WAIT))
        await call.connect(timeout=WAIT)  # returns with the Room's CONN_CONNECTED event, before its connect() does
        await reconnected
        assert states_at_reconnected == [rtc.ConnectionState.CONN_CONNECTED]  # not while the Room still resumed
        assert call.connection_state == "connected" and len(made) == 1 and call.room is made[0]
    finally:
        await call.disconnect()
