"""The legacy two-peer-connection mode (``/rtc``): the server offers the subscriber connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from livekit import rtc

from rtcstack.testing import LoopbackServer

if TYPE_CHECKING:
    from conftest import Connect

LEGACY = rtc.RoomOptions(single_peer_connection=False)


async def test_connect_in_legacy_mode(server: LoopbackServer, connect: Connect) -> None:
    bob = await connect("bob")
    alice = await connect("alice", options=LEGACY)

    assert alice.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
    assert list(alice.room.remote_participants) == ["bob"]
    await bob.wait_for("participant_active", lambda p: p.identity == "alice")
    assert server.participants("demo") == ["bob", "alice"]

    await alice.room.disconnect()
    await bob.wait_for("participant_disconnected", lambda p: p.identity == "alice")


async def test_legacy_mode_publishes_and_resumes(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice", options=LEGACY)
    bob = await connect("bob")
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)

    await alice.room.local_participant.publish_track(track)
    await bob.wait_for("track_published", lambda pub, p: p.identity == "alice")
    await server.drop_signal("alice")

    await alice.wait_for("reconnected")
    assert server.registry.find("alice").sid == alice.room.local_participant.sid
    await source.aclose()
