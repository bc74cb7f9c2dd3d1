"""Helpers for tests that run on both servers: what they share is LiveKit's RoomService API (Twirp)."""

from __future__ import annotations

import asyncio

from livekit import api

from rtcstack.testing import LiveKitServer, LoopbackServer
from tests.calls import within

AnyServer = LoopbackServer | LiveKitServer
BOTH = ("loopback", "livekit")
"""For ``pytest.mark.servers(*BOTH)``."""


async def listed(server: AnyServer, room: str) -> list[str]:
    """The identities in ``room`` by RoomService.ListParticipants, sorted (LiveKit lists them in no fixed order)."""
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
        response = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    return sorted(p.identity for p in response.participants)


async def until_listed(server: AnyServer, room: str, expected: list[str], what: str = "") -> None:
    """Poll ListParticipants until it gives ``expected`` (sorted)."""

    async def poll() -> None:
        while await listed(server, room) != sorted(expected):  # noqa: ASYNC110  (the server has no event to wait on)
            await asyncio.sleep(0.05)

    await within(what or f"{room} listing {sorted(expected)}", poll())


async def remove(server: AnyServer, room: str, identity: str) -> None:
    """RoomService.RemoveParticipant: the participant gets leave(participant_removed)."""
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
        await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity=identity))


async def force_rejoin(server: AnyServer, identity: str) -> None:
    """Make the SDK give up at once and the call rejoin with a fresh Room, on either server: the signal is cut,
    and the SDK's resume and full restart are refused with 401 (its validate too: JOIN_FAILURE, a transient reason);
    the call's own rejoin then gets in."""
    server.refuse_joins(count=2, status=401, identity=identity)
    await server.drop_signal(identity)
