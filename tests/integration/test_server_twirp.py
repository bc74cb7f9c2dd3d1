"""LoopbackServer's Twirp RoomService through ``livekit.api.LiveKitAPI``, seen by real ``livekit.rtc.Room`` clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import pytest
from livekit import api, rtc

from rtcstack.testing import LoopbackServer

if TYPE_CHECKING:
    from conftest import Client, Connect

LEGACY = rtc.RoomOptions(single_peer_connection=False)


@pytest.fixture
async def lkapi(server: LoopbackServer) -> AsyncIterator[api.LiveKitAPI]:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as client:
        yield client


def record_data(client: Client) -> None:
    client.room.on("data_received", lambda packet: client.record("data_received", packet))


async def test_list_rooms_and_participants(connect: Connect, lkapi: api.LiveKitAPI) -> None:
    alice = await connect("alice")
    await connect("bob")
    await connect("carol", room="other")

    rooms = (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms
    assert sorted((r.name, r.num_participants) for r in rooms) == [("demo", 2), ("other", 1)]
    assert [r.name for r in (await lkapi.room.list_rooms(api.ListRoomsRequest(names=["other"]))).rooms] == ["other"]

    listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room="demo"))
    assert [p.identity for p in listed.participants] == ["alice", "bob"]
    info = await lkapi.room.get_participant(api.RoomParticipantIdentity(room="demo", identity="alice"))
    assert info.sid == alice.room.local_participant.sid
    assert info.state == api.ParticipantInfo.ACTIVE


async def test_list_participants_of_an_unknown_room_is_empty(lkapi: api.LiveKitAPI) -> None:
    listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room="nowhere"))

    assert list(listed.participants) == []


async def test_remove_participant(server: LoopbackServer, connect: Connect, lkapi: api.LiveKitAPI) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    await alice.wait_for("participant_connected", lambda p: p.identity == "bob")  # else its leave is news of nobody

    await lkapi.room.remove_participant(api.RoomParticipantIdentity(room="demo", identity="bob"))

    assert await bob.wait_for("disconnected") == (rtc.DisconnectReason.PARTICIPANT_REMOVED,)
    await alice.wait_for("participant_disconnected", lambda p: p.identity == "bob")
    assert server.participants("demo") == ["alice"]
    assert alice.room.connection_state == rtc.ConnectionState.CONN_CONNECTED


async def test_delete_room(server: LoopbackServer, connect: Connect, lkapi: api.LiveKitAPI) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    carol = await connect("carol", room="other")

    await lkapi.room.delete_room(api.DeleteRoomRequest(room="demo"))

    assert await alice.wait_for("disconnected") == (rtc.DisconnectReason.ROOM_DELETED,)
    assert await bob.wait_for("disconnected") == (rtc.DisconnectReason.ROOM_DELETED,)
    assert server.rooms() == ["other"]
    assert carol.room.connection_state == rtc.ConnectionState.CONN_CONNECTED


async def test_update_participant(connect: Connect, lkapi: api.LiveKitAPI) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    request = api.UpdateParticipantRequest(
        room="demo", identity="alice", metadata="on stage", name="Alice", attributes={"role": "host"}
    )

    info = await lkapi.room.update_participant(request)

    assert (info.metadata, info.name, dict(info.attributes)) == ("on stage", "Alice", {"role": "host"})
    participant, _, new = await bob.wait_for("participant_metadata_changed", lambda p, old, new: p.identity == "alice")
    assert new == "on stage"
    await bob.wait_for("participant_name_changed", lambda p, old, new: new == "Alice")
    await bob.wait_for("participant_attributes_changed", lambda changed, p: changed == {"role": "host"})
    assert participant.attributes == {"role": "host"}
    await alice.wait_for("participant_metadata_changed", lambda p, old, new: new == "on stage")
    assert alice.room.local_participant.metadata == "on stage"


async def test_send_data_reaches_destinations_only(connect: Connect, lkapi: api.LiveKitAPI) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    record_data(alice)
    record_data(bob)

    await lkapi.room.send_data(
        api.SendDataRequest(
            room="demo", data=b"for bob", kind=api.DataPacket.RELIABLE, topic="chat", destination_identities=["bob"]
        )
    )
    await lkapi.room.send_data(api.SendDataRequest(room="demo", data=b"for all", kind=api.DataPacket.RELIABLE))

    (packet,) = await bob.wait_for("data_received")
    assert (packet.data, packet.topic, packet.participant) == (b"for bob", "chat", None)
    await bob.wait_for("data_received", lambda p: p.data == b"for all")
    (first,) = await alice.wait_for("data_received")
    assert first.data == b"for all"
    assert first.kind == rtc.DataPacketKind.KIND_RELIABLE


async def test_send_data_in_legacy_mode_and_lossy(connect: Connect, lkapi: api.LiveKitAPI) -> None:
    alice = await connect("alice", options=LEGACY)
    record_data(alice)

    await lkapi.room.send_data(api.SendDataRequest(room="demo", data=b"ping", kind=api.DataPacket.LOSSY))

    (packet,) = await alice.wait_for("data_received")
    assert (packet.data, packet.kind) == (b"ping", rtc.DataPacketKind.KIND_LOSSY)


async def test_unknown_room_and_participant_are_not_found(connect: Connect, lkapi: api.LiveKitAPI) -> None:
    await connect("alice")
    calls = [
        lkapi.room.get_participant(api.RoomParticipantIdentity(room="demo", identity="nobody")),
        lkapi.room.remove_participant(api.RoomParticipantIdentity(room="demo", identity="nobody")),
        lkapi.room.update_participant(api.UpdateParticipantRequest(room="nowhere", identity="alice", name="x")),
        lkapi.room.delete_room(api.DeleteRoomRequest(room="nowhere")),
        lkapi.room.send_data(api.SendDataRequest(room="nowhere", data=b"x")),
    ]
    for call in calls:
        with pytest.raises(api.ServerError) as caught:
            await call
        assert (caught.value.status, caught.value.code) == (404, "not_found")


async def test_a_wrong_secret_is_unauthenticated(server: LoopbackServer) -> None:
    async with api.LiveKitAPI(server.http_url, server.api_key, "a-secret-that-is-long-enough-but-wrong-0123") as client:
        with pytest.raises(api.ServerError) as caught:
            await client.room.list_rooms(api.ListRoomsRequest())

    assert caught.value.status == 401


async def test_json_encoding(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")
    grants = api.VideoGrants(room_admin=True, room="demo")
    token = api.AccessToken(server.api_key, server.api_secret).with_grants(grants).to_jwt()
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{server.http_url}/twirp/livekit.RoomService/GetParticipant"

    async with aiohttp.ClientSession() as http:
        body = json.dumps({"room": "demo", "identity": "alice", "unknown_field": 1})
        async with http.post(url, data=body, headers=headers | {"Content-Type": "application/json"}) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            info = await response.json()

    assert info["sid"] == alice.room.local_participant.sid
    assert info["identity"] == "alice"
    assert info["state"] == "ACTIVE"
    assert isinstance(info["joined_at"], str)
    assert info["metadata"] == ""
