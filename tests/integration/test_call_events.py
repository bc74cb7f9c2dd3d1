"""Call events with the real livekit SDK, on LoopbackServer and livekit-server: tracks (published, muted, unmuted,
local),
active speakers, the roster at connect, and the options that go to the SDK.

Each "nothing was emitted" check is made after a later event of the same signal stream came through (the server
sends in order), never after a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from livekit import rtc

from rtcstack import Call, CallOptions, Participant, create_call
from rtcstack.testing import LoopbackServer
from rtcstack.testing._wire import decode_join_request
from tests.audio import tone
from tests.calls import CallFactory, expect, round_trip, until, within
from tests.servers import BOTH, AnyServer

pytestmark = pytest.mark.servers(*BOTH)


def record(call: Call, *names: Any) -> list[tuple[str, tuple[Any, ...]]]:
    seen: list[tuple[str, tuple[Any, ...]]] = []
    for name in names:
        call.on(name, lambda *args, name=name: seen.append((name, args)))
    return seen


async def publish_microphone(call: Call) -> tuple[rtc.LocalAudioTrack, rtc.LocalTrackPublication]:
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await call.room.local_participant.publish_track(track, options)
    return track, publication


async def test_the_apps_own_unsubscribe_is_told_and_so_is_subscribing_again(
    server: AnyServer, make_call: CallFactory
) -> None:
    """An unsubscribe the app makes through `call.room` (the SDK's track_unsubscribed; the publication stays) is a
    `track_unsubscribed`, and the track shows as not subscribed; subscribing again is a `track_subscribed`."""
    alice, bob = make_call("alice"), make_call("bob")
    await alice.connect()
    await bob.connect()
    subscribed = expect(alice, "track_subscribed")
    await publish_microphone(bob)
    sid = (await subscribed).track.sid  # type: ignore[union-attr]  # a track_subscribed has one
    (publication,) = alice.room.remote_participants["bob"].track_publications.values()
    unsubscribed = expect(alice, "track_unsubscribed")
    publication.set_subscribed(False)
    event = await unsubscribed
    assert event.participant is not None and event.participant.identity == "bob"
    assert event.track is not None and event.track.sid == sid and not event.track.subscribed
    await until(lambda: [t.subscribed for t in alice.participants[0].tracks] == [False], "the roster's track")
    again = expect(alice, "track_subscribed")
    publication.set_subscribed(True)
    assert (await again).track.sid == sid  # type: ignore[union-attr]  # a track_subscribed has one


async def test_remote_track_muted_and_unmuted(server: AnyServer, make_call: CallFactory) -> None:
    alice, bob = make_call("alice"), make_call("bob")
    await alice.connect()
    await bob.connect()
    published = expect(alice, "track_published")
    track, _ = await publish_microphone(bob)
    await published

    muted = expect(alice, "track_muted")
    track.mute()
    event = await muted
    assert event.participant is not None and event.participant.identity == "bob"
    assert event.track is not None and event.track.muted and event.track.kind == "audio"
    assert alice.participants[0].tracks[0].muted

    unmuted = expect(alice, "track_unmuted")
    track.unmute()
    event = await unmuted
    assert event.participant is not None and event.participant.identity == "bob"
    assert event.track is not None and not event.track.muted and event.track.source == "microphone"
    assert not alice.participants[0].tracks[0].muted


async def test_remote_track_unpublished(make_call: CallFactory) -> None:
    alice, bob = make_call("alice"), make_call("bob")
    await alice.connect()
    await bob.connect()
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)

    async def play() -> None:  # the server sees an unpublish as the end of the track's media: send some
        frame = rtc.AudioFrame.create(48000, 1, 480)
        while True:
            await source.capture_frame(frame)

    subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    alice.room.on("track_subscribed", lambda *_: subscribed.done() or subscribed.set_result(None))
    published = expect(alice, "track_published")
    publication = await bob.room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    player = asyncio.ensure_future(play())
    try:
        await published
        await within("alice subscribing to bob's track (its media flowing)", subscribed)
        unpublished = expect(alice, "track_unpublished")
        await bob.room.local_participant.unpublish_track(publication.sid)
        event = await unpublished
    finally:
        player.cancel()
        await asyncio.gather(player, return_exceptions=True)
        await source.aclose()
    assert event.participant is not None and event.participant.identity == "bob" and event.participant.tracks == []
    assert event.track is not None and event.track.sid == publication.sid and event.track.kind == "audio"
    assert alice.participants[0].tracks == []


async def test_local_track_published(make_call: CallFactory) -> None:
    alice = make_call("alice")
    await alice.connect()
    published = expect(alice, "track_published")
    _, publication = await publish_microphone(alice)
    event = await published
    assert event.participant is not None and event.participant.is_local and event.participant.identity == "alice"
    assert event.track is not None and event.track.sid == publication.sid and event.track.kind == "audio"
    assert alice.local_participant is not None
    assert [t.sid for t in alice.local_participant.tracks] == [publication.sid]


async def test_local_track_muted_and_unmuted(make_call: CallFactory) -> None:
    alice = make_call("alice")
    await alice.connect()
    track, publication = await publish_microphone(alice)

    muted = expect(alice, "track_muted")
    track.mute()
    event = await muted
    assert event.participant is not None and event.participant.is_local
    assert event.track is not None and event.track.sid == publication.sid and event.track.muted

    unmuted = expect(alice, "track_unmuted")
    track.unmute()
    event = await unmuted
    assert event.participant is not None and event.participant.is_local
    assert event.track is not None and not event.track.muted


async def test_active_speakers_and_is_speaking(make_call: CallFactory) -> None:
    """As LiveKit: who speaks is told to those subscribed to the speaker (carol subscribes to nothing)."""
    alice, bob = make_call("alice"), make_call("bob")
    carol = make_call("carol", options=CallOptions(auto_subscribe=False))
    await alice.connect()
    await carol.connect()
    subscribed = expect(alice, "track_subscribed")
    await bob.connect()
    carol_heard = record(carol, "active_speakers_changed")
    async with tone() as track:
        await bob.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        await subscribed

        speaking = expect(alice, "active_speakers_changed")
        await bob.room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_SPEAKER)
        event = await speaking
        assert [p.identity for p in event.participants or []] == ["bob"]
        assert all(p.is_speaking for p in event.participants or [])
        assert next(p for p in alice.participants if p.identity == "bob").is_speaking
        await round_trip(bob, carol)
        assert carol_heard == []
        quiet = asyncio.get_running_loop().create_future()
        alice.on("active_speakers_changed", lambda people: people or quiet.done() or quiet.set_result(None))
    # the tone stops; the server ends the simulated speech on its own (livekit-server also hears the tone end)
    await within("an empty active_speakers_changed", quiet)
    assert not next(p for p in alice.participants if p.identity == "bob").is_speaking


async def test_the_local_participant_speaking(make_call: CallFactory) -> None:
    alice = make_call("alice")
    await alice.connect()
    speaking = expect(alice, "active_speakers_changed")
    await alice.room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_SPEAKER)
    event = await speaking
    assert [(p.identity, p.is_local, p.is_speaking) for p in event.participants or []] == [("alice", True, True)]
    assert alice.local_participant is not None and alice.local_participant.is_speaking


async def test_people_already_in_the_room_are_listed_without_joins(server: AnyServer, make_call: CallFactory) -> None:
    bob = make_call("bob")
    await bob.connect()
    agent = rtc.Room()
    await agent.connect(server.url, server.token("agent", room="demo", kind="agent"))
    alice = make_call("alice")
    joined = record(alice, "participant_joined")
    await alice.connect()
    assert [p.identity for p in alice.participants] == ["bob", "agent"]
    assert [p.kind for p in alice.participants] == ["standard", "agent"]
    await round_trip(bob, alice)
    assert joined == []
    carol = make_call("carol")
    joining = expect(alice, "participant_joined")
    await carol.connect()
    newcomer = (await joining).participant
    assert newcomer is not None and newcomer.identity == "carol"
    await agent.disconnect()


def join_recorder(seen: list[tuple[str, bool]]) -> Any:
    """An aiohttp middleware recording (path, auto_subscribe) of every signal connect."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/rtc/v1":
            join = decode_join_request(request.query["join_request"])
            seen.append((request.path, join.connection_settings.auto_subscribe))
        elif request.path == "/rtc":
            seen.append((request.path, request.query.get("auto_subscribe") in ("1", "true")))
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


@pytest.mark.parametrize(("auto_subscribe", "single_pc"), [(True, True), (False, False), (False, True)])
async def test_auto_subscribe_and_single_peer_connection_reach_the_sdk(auto_subscribe: bool, single_pc: bool) -> None:
    seen: list[tuple[str, bool]] = []
    server = LoopbackServer()
    app = server.build_app()
    app.middlewares.append(join_recorder(seen))
    await server.start(app)
    try:
        options = CallOptions(auto_subscribe=auto_subscribe, single_peer_connection=single_pc)
        async with create_call(server.url, server.token("alice", room="demo"), options=options) as call:
            assert call.connection_state == "connected"
        assert seen == [("/rtc/v1" if single_pc else "/rtc", auto_subscribe)]
    finally:
        await server.close()


async def test_participant_updated_for_name_metadata_and_attributes(make_call: CallFactory) -> None:
    alice, bob = make_call("alice"), make_call("bob")
    await alice.connect()
    joined = expect(alice, "participant_joined")
    await bob.connect()
    await joined
    local = bob.room.local_participant

    changes: list[tuple[Callable[[], Awaitable[None]], Callable[[Participant], bool]]] = [
        (lambda: local.set_name("Bob"), lambda p: p.name == "Bob"),
        (lambda: local.set_metadata("busy"), lambda p: p.metadata == "busy"),
        (lambda: local.set_attributes({"mood": "ok"}), lambda p: p.attributes == {"mood": "ok"}),
    ]
    for change, check in changes:
        await updated_by(alice, "bob", change, check)
        assert check(alice.participants[0])


async def updated_by(
    call: Call, identity: str, change: Callable[[], Awaitable[None]], check: Callable[[Participant], bool]
) -> None:
    """Make `change`, then wait for a participant_updated about `identity` that passes `check`."""
    updated: asyncio.Future[Participant] = asyncio.get_running_loop().create_future()

    def seen(participant: Participant) -> None:
        if participant.identity == identity and check(participant) and not updated.done():
            updated.set_result(participant)

    call.on("participant_updated", seen)
    try:
        await change()
        await within(f"a participant_updated about {identity} with the change", updated)
    finally:
        call.off("participant_updated", seen)


async def bob_joins(make_call: CallFactory, event: str) -> tuple[Call, list[tuple[str, str]]]:
    """Alice is in the call; bob joins, and alice has had her first `event`: alice, and the (event, bob's state) of
    each participant_joined / participant_updated she heard."""
    alice, bob = make_call("alice"), make_call("bob")
    await alice.connect()
    states: list[tuple[str, str]] = []
    alice.on("participant_joined", lambda p: states.append(("joined", p.state)))
    alice.on("participant_updated", lambda p: states.append(("updated", p.state)))
    heard = expect(alice, event)
    await bob.connect()
    await heard
    return alice, states


async def test_a_participant_becoming_active_is_an_update(make_call: CallFactory) -> None:
    """A joiner is active once its media is up. As LiveKit, the server batches the joins and state changes of those
    who publish nothing (every 3 s, the latest only): the room first hears of bob as joined or already active, and
    the roster ends with him active either way."""
    alice, states = await bob_joins(make_call, "participant_joined")
    await until(lambda: alice.participants[0].state == "active", "bob active in alice's roster")
    assert states[0][0] == "joined" and states[-1][1] == "active"
    assert [s for s in states if s[1] == "joined"] in ([], [("joined", "joined")])


@pytest.mark.servers("loopback")
@pytest.mark.parametrize("server", [{"update_interval": 0}], indirect=True)
async def test_a_joiner_heard_of_before_its_media_is_up_becomes_active_by_an_update(make_call: CallFactory) -> None:
    """Without LiveKit's batching the room hears of bob as joined at once, then as active once his media connection
    is up (the SDK's participant_active): alice's roster follows with a participant_updated."""
    alice, states = await bob_joins(make_call, "participant_updated")
    assert states == [("joined", "joined"), ("updated", "active")]
    assert alice.participants[0].state == "active"


@pytest.mark.servers("loopback")  # livekit-server flushes on a 3 s ticker: there, which batch a join falls in varies
async def test_someone_who_publishes_nothing_and_leaves_before_the_next_batch_is_never_announced(
    server: AnyServer, make_call: CallFactory
) -> None:
    """As LiveKit: joins and leaves of participants who publish nothing go out in batches, the latest of each only,
    so bob's join and leave within one batch reach alice as the leave of someone she never knew: nothing."""
    alice = make_call("alice")
    seen = record(alice, "participant_joined", "participant_left")
    await alice.connect()
    bob = rtc.Room()
    await bob.connect(server.url, server.token("bob", room="demo"))
    await bob.disconnect()
    carol = make_call("carol")
    joined = expect(alice, "participant_joined")
    await carol.connect()
    assert (await joined).participant is not None  # carol's join came in the batch with bob's leave, or later
    assert [(name, args[0].identity) for name, args in seen] == [("participant_joined", "carol")]
