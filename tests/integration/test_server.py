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

    bob = await connect("bob", room="demo")
    await alice.room.disconnect()

    (left,) = await bob.wait_for("participant_disconnected", lambda p: p.identity == "alice")
    assert left.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED
    assert server.participants("demo") == ["bob"]


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


async def test_two_clients_see_each_other_join_change_and_leave(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")
    bob = await connect("bob")

    assert [p.identity for p in bob.room.remote_participants.values()] == ["alice"]
    await _joined(alice, "bob")
    await alice.wait_for("participant_active", lambda p: p.identity == "bob")

    await bob.room.local_participant.set_metadata("hello")
    await bob.room.local_participant.set_name("Bob")
    await bob.room.local_participant.set_attributes({"mood": "ok"})
    await alice.wait_for("participant_metadata_changed", lambda p, old, new: p.identity == "bob" and new == "hello")
    await alice.wait_for("participant_name_changed", lambda p, old, new: new == "Bob")
    await alice.wait_for("participant_attributes_changed", lambda changed, p: changed == {"mood": "ok"})
    assert alice.room.remote_participants["bob"].metadata == "hello"

    await bob.room.disconnect()

    await alice.wait_for("participant_disconnected", lambda p: p.identity == "bob")
    assert server.participants("demo") == ["alice"]


async def test_tracks_are_announced_with_mute_state(connect: Connect) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)

    publication = await bob.room.local_participant.publish_track(track)
    remote, _ = await alice.wait_for("track_published", lambda pub, p: p.identity == "bob")
    assert remote.sid == publication.sid
    assert remote.name == "mic"

    track.mute()
    await alice.wait_for("track_muted", lambda p, pub: pub.sid == publication.sid)
    track.unmute()
    await alice.wait_for("track_unmuted", lambda p, pub: pub.sid == publication.sid)
    await source.aclose()


async def test_duplicate_identity_replaces_the_first_session(server: LoopbackServer, connect: Connect) -> None:
    first = await connect("alice")
    bob = await connect("bob")

    second = await connect("alice")

    assert await first.wait_for("disconnected") == (rtc.DisconnectReason.DUPLICATE_IDENTITY,)
    assert second.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
    assert server.participants("demo") == ["bob", "alice"]
    new_sid = second.room.local_participant.sid
    await bob.wait_for("participant_connected", lambda p: p.sid == new_sid)
