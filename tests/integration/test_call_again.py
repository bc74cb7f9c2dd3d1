"""A Call connects again after `disconnect()` (the README says so), and its identity and room stay those of its
token across a server-pushed refresh: the real SDK against LoopbackServer."""

from __future__ import annotations

from livekit import rtc

from rtcstack.testing import LoopbackServer, audio_track
from tests.calls import CallFactory, expect, within

MIC = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)


async def test_a_call_connects_again_after_disconnect(server: LoopbackServer, make_call: CallFactory) -> None:
    """Everything works the second time: state and events, the roster, publishing (the server hears the new track,
    counted from zero: `received()` is per track) and following a remote stream."""
    await server.add_participant("demo", "caller", audio="tone:440")
    call = make_call("alice")
    events: list[str] = []
    call.on("connected", lambda: events.append("connected"))
    call.on("disconnected", lambda reason: events.append(f"disconnected {reason}"))
    async with audio_track() as track:
        await call.connect()
        first = await call.publish_track(track, MIC)
        await server.wait_heard("alice", timeout=15)
        await call.disconnect()
        assert "alice" not in server.participants("demo")
        first_room = call.room

        await call.connect()
        assert (call.connection_state, call.disconnect_reason) == ("connected", None)
        assert call.room is not first_room
        assert [p.identity for p in call.participants] == ["caller"]
        assert call.local_participant is not None and call.local_participant.identity == "alice"
        second = await call.publish_track(track, MIC)
        heard = await server.wait_heard("alice", timeout=15)
        assert heard.track_sid == second.sid != first.sid
        assert [t.track_sid for t in server.received("alice")] == [second.sid]
        stream = call.audio_stream("caller")
        await within("a frame of the caller's audio", stream.__anext__())
        await stream.aclose()
        await call.disconnect()
    assert events == ["connected", "disconnected client_initiated", "connected", "disconnected client_initiated"]


async def test_identity_and_room_name_stay_those_of_the_token_across_a_refresh(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    call = make_call("alice", room="standup")
    assert (call.identity, call.room_name) == ("alice", "standup")
    await call.connect()
    refreshed = expect(call, "token_refreshed")
    await server.refresh_token("alice", ttl=900)
    await within("token_refreshed", refreshed)
    assert (call.identity, call.room_name) == ("alice", "standup")
    assert call.local_participant is not None and call.local_participant.identity == call.identity
