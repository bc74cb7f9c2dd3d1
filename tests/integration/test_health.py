"""Media health with the real SDK (DESIGN rule 8): track_stalled, track_resumed, media_restored and TrackInfo.media.

A publisher that stops feeding its camera is a stall on any server; LoopbackServer's `stall_media` stops forwarding a
track without unpublish or mute. A local audio track never stalls: the SDK keeps sending silence when the app stops
feeding it (measured in tests/integration/test_health_stats.py), so local stalls are shown with a camera.

Events are recorded once media flows: on livekit-server a fresh subscription's first video frame can take over a
second, a stall by these tests' 1 s timeout (true, and not what a test of a later fault is about).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from livekit import rtc

from rtcstack import Call, CallEvent, CallOptions, ReconnectPolicy
from rtcstack.testing import LoopbackServer
from tests.calls import CallFactory, expect, round_trip, until, within
from tests.integration.test_health_stats import publishing
from tests.servers import BOTH, AnyServer, force_rejoin

TIMEOUT = 1.0
FAST = CallOptions(media_stall_timeout=TIMEOUT, reconnect=ReconnectPolicy(initial_delay=0.0, max_delay=0.2))


def media(call: Call, identity: str, source: str) -> str | None:
    """The media state `call` shows for `identity`'s track of `source` (None: no such track)."""
    people = [call.local_participant] if identity == call.identity else call.participants
    for person in people:
        if person is not None and person.identity == identity:
            return next((t.media for t in person.tracks if t.source == source), None)
    return None


def recorder(call: Call, *names: str) -> list[CallEvent]:
    seen: list[CallEvent] = []
    for name in names:
        call.on(name, lambda *args, name=name: seen.append(CallEvent(name, args)))  # type: ignore[call-overload]  # any of the names
    return seen


def of(events: list[CallEvent], name: str, source: str | None = None) -> list[CallEvent]:
    return [e for e in events if e.name == name and (source is None or (e.track and e.track.source == source))]


async def pair(make_call: CallFactory, **options: Any) -> tuple[Call, Call]:
    alice = make_call("alice", options=FAST.model_copy(update=options))
    bob = make_call("bob", options=FAST.model_copy(update=options))
    await alice.connect()
    await bob.connect()
    return alice, bob


async def flowing(call: Call, identity: str, *sources: str) -> None:
    for source in sources:
        await until(lambda source=source: media(call, identity, source) == "flowing", f"{identity}'s {source} flowing")


@pytest.mark.servers(*BOTH)
async def test_a_camera_that_stops_stalls_on_both_sides_and_resumes(server: AnyServer, make_call: CallFactory) -> None:
    alice, bob = await pair(make_call)
    async with publishing(bob.room) as (_, _, camera):
        await flowing(alice, "bob", "camera", "microphone")
        await flowing(bob, "bob", "camera")
        events = recorder(alice, "track_stalled", "track_resumed")
        own = recorder(bob, "track_stalled", "track_resumed")
        stalled, stalled_here = expect(alice, "track_stalled"), expect(bob, "track_stalled")
        camera.feeding.clear()
        event, here = await stalled, await stalled_here
        assert event.participant is not None and event.participant.identity == "bob"
        assert event.track is not None and event.track.source == "camera" and event.track.media == "stalled"
        assert event.reason == "no_packets" and media(alice, "bob", "camera") == "stalled"
        assert here.participant is not None and here.participant.is_local and here.reason == "no_packets"
        assert here.track is not None and here.track.source == "camera"
        resumed, resumed_here = expect(alice, "track_resumed"), expect(bob, "track_resumed")
        camera.feeding.set()
        back, back_here = await resumed, await resumed_here
        assert back.track is not None and back.track.source == "camera" and back.track.media == "flowing"
        assert back.stalled_for is not None and back.stalled_for >= TIMEOUT
        assert back_here.participant is not None and back_here.participant.is_local
    assert of(events, "track_stalled", "microphone") == [] and len(of(events, "track_stalled")) == 1
    assert [e.name for e in own] == ["track_stalled", "track_resumed"]


async def test_a_track_the_server_stops_forwarding_stalls_and_resumes(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    alice, bob = await pair(make_call)
    async with publishing(bob.room):
        await flowing(alice, "bob", "camera", "microphone")
        events = recorder(alice, "track_stalled", "track_resumed")
        stalled = expect(alice, "track_stalled")
        await server.stall_media("bob", source="microphone")
        event = await stalled
        assert event.track is not None and event.track.source == "microphone" and event.reason == "no_packets"
        resumed = expect(alice, "track_resumed")
        await server.resume_media("bob", source="microphone")
        await resumed
    assert [(e.name, e.track and e.track.source) for e in events] == [
        ("track_stalled", "microphone"),
        ("track_resumed", "microphone"),
    ]


async def test_a_camera_that_sends_no_decodable_frame_stalls_with_no_frames(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    alice, bob = await pair(make_call)
    async with publishing(bob.room):
        await flowing(alice, "bob", "camera")
        stalled = expect(alice, "track_stalled")
        await server.stall_media("bob", source="camera", mode="no_frames")
        event = await stalled
        assert event.track is not None and event.track.source == "camera" and event.reason == "no_frames"
        resumed = expect(alice, "track_resumed")
        await server.resume_media("bob", source="camera")
        await resumed


async def test_a_subscribed_track_that_never_flows_stalls(server: LoopbackServer, make_call: CallFactory) -> None:
    alice, bob = await pair(make_call)
    await server.stall_media("bob", source="microphone")  # holds for a track published later
    subscribed = expect(alice, "track_subscribed")
    stalled = expect(alice, "track_stalled")
    async with publishing(bob.room):
        await subscribed
        event = await stalled
        assert event.track is not None and event.track.source == "microphone" and event.reason == "no_packets"
        assert media(alice, "bob", "camera") == "flowing"


@pytest.mark.servers(*BOTH)
async def test_mute_is_not_a_stall(server: AnyServer, make_call: CallFactory) -> None:
    alice, bob = await pair(make_call)
    async with publishing(bob.room) as (mic, _, camera):
        await flowing(alice, "bob", "camera", "microphone")
        events = recorder(alice, "track_stalled")
        muted = expect(alice, "track_muted")
        mic.track.mute()  # type: ignore[union-attr]  # a published track has one
        await muted
        assert media(alice, "bob", "microphone") == "unknown"  # not watched while muted
        stalled = expect(alice, "track_stalled")
        camera.feeding.clear()  # a later stall, well past the muted microphone's timeout
        assert (await stalled).track.source == "camera"  # type: ignore[union-attr]  # a track_stalled has one
        unmuted = expect(alice, "track_unmuted")
        mic.track.unmute()  # type: ignore[union-attr]  # a published track has one
        await unmuted
        await flowing(alice, "bob", "microphone")
    assert [e.track.source for e in events if e.track] == ["camera"]


@pytest.mark.parametrize("fault", ["resume", "full restart", "rejoin"])
@pytest.mark.servers(*BOTH)
async def test_media_is_restored_after_each_kind_of_reconnect(
    server: AnyServer, make_call: CallFactory, fault: str
) -> None:
    # The default timeout: after a rejoin on livekit-server the fresh subscription's video took up to 1.8 s from
    # `reconnected` to flow (80 runs), a stall by a 1 s timeout in 3 runs of 40.
    alice, bob = await pair(make_call, media_stall_timeout=CallOptions().media_stall_timeout)
    faults: dict[str, Callable[[], Any]] = {
        "resume": lambda: server.drop_signal("alice"),
        "full restart": lambda: alice.room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT),
        "rejoin": lambda: force_rejoin(server, "alice"),
    }
    async with publishing(bob.room), publishing(alice.room):
        await flowing(alice, "bob", "camera", "microphone")
        await flowing(alice, "alice", "camera", "microphone")
        events = recorder(alice, "reconnecting", "reconnected", "track_stalled", "media_restored")
        restored = expect(alice, "media_restored")
        await faults[fault]()
        event = await restored
        assert event.after is not None and event.after > 0
        await flowing(alice, "bob", "camera", "microphone")
    names = [e.name for e in events]
    assert names[0] == "reconnecting" and "track_stalled" not in names, names
    assert names.index("reconnected") < names.index("media_restored") and names.count("media_restored") == 1


@pytest.mark.parametrize("fault", ["resume", "rejoin"])
async def test_reconnected_but_no_media_stalls_after_reconnected_and_is_restored_when_media_flows(
    server: LoopbackServer, make_call: CallFactory, fault: str
) -> None:
    alice, bob = await pair(make_call)
    async with publishing(bob.room):
        await flowing(alice, "bob", "camera", "microphone")
        events = recorder(alice, "reconnected", "track_stalled", "track_resumed", "media_restored")
        await server.stall_media("bob", source="camera")  # a rejoin's fresh subscription gets nothing either
        reconnected, stalled = expect(alice, "reconnected"), expect(alice, "track_stalled")
        await (server.drop_signal("alice") if fault == "resume" else force_rejoin(server, "alice"))
        await reconnected
        event = await stalled
        assert event.track is not None and event.track.source == "camera"
        assert [e.name for e in events] == ["reconnected", "track_stalled"]  # the microphone came back
        restored = expect(alice, "media_restored")
        await server.resume_media("bob", source="camera")
        await restored
    assert [e.name for e in events] == ["reconnected", "track_stalled", "track_resumed", "media_restored"]


@pytest.mark.servers(*BOTH)
async def test_with_the_watch_off_no_stats_are_read(
    server: AnyServer, make_call: CallFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_by: list[rtc.Room] = []
    read = rtc.Room.get_rtc_stats

    async def counted(room: rtc.Room) -> rtc.RtcStats:
        read_by.append(room)
        return await read(room)

    monkeypatch.setattr(rtc.Room, "get_rtc_stats", counted)
    alice, bob = await pair(make_call, media_stall_timeout=None)
    carol = make_call("carol", options=FAST)  # watches beside them: what she sees, alice and bob had as long to read
    await carol.connect()
    async with publishing(bob.room) as (_, _, camera):
        await flowing(carol, "bob", "camera")
        stalled = expect(carol, "track_stalled")
        camera.feeding.clear()
        await within("carol seeing bob's camera stall", stalled)
        assert carol.room in read_by and alice.room not in read_by and bob.room not in read_by
        await round_trip(bob, alice)
        assert [t.media for p in alice.participants for t in p.tracks] == ["unknown", "unknown"]


async def test_nothing_of_the_watch_runs_after_disconnect(make_call: CallFactory, server: LoopbackServer) -> None:
    alice, bob = await pair(make_call)
    async with publishing(bob.room):
        await flowing(alice, "bob", "camera")
        await alice.disconnect()
        await bob.disconnect()
    assert not [t for t in asyncio.all_tasks() if "media health" in t.get_name()]
