"""The real livekit.rtc.Room against LoopbackServer: join, rooms and fan-out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from livekit import rtc

from rtcstack.testing import LoopbackServer

if TYPE_CHECKING:
    from conftest import Client, Connect


async def test_connect_and_disconnect(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice", room="demo")

    assert alice.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
    assert alice.room.name == "demo"
    assert alice.room.local_participant.identity == "alice"
    assert server.rooms() == ["demo"]
    assert server.participants("demo") == ["alice"]

    await alice.room.disconnect()

    assert await alice.wait_for("disconnected") == (rtc.DisconnectReason.CLIENT_INITIATED,)
    assert server.rooms() == []


async def test_validate_endpoints(server: LoopbackServer) -> None:
    good = {"Authorization": f"Bearer {server.token('alice')}"}
    bad = {"Authorization": "Bearer not-a-jwt"}
    async with aiohttp.ClientSession() as http:
        for path in ("/rtc/v1/validate", "/rtc/validate"):
            async with http.get(server.http_url + path, headers=good) as response:
                assert response.status == 200
            async with http.get(server.http_url + path, headers=bad) as response:
                assert response.status == 401


async def _joined(client: Client, identity: str) -> None:
    await client.wait_for("participant_connected", lambda p: p.identity == identity)
