"""The call's media across its own faults, with the real livekit SDK on LoopbackServer (which forwards media) and,
where no LoopbackServer-only hook is needed, on livekit-server.

One behaviour per test: a tone published through the call is heard again after a rejoin; a track published directly
on `call.room` is published again and an unpublished one is not; `audio_stream` follows a participant across a
resume, a full restart and a rejoin and ends when they leave; `track_subscribed` comes once per real subscription;
`data_received` tells reliable from lossy; without auto-subscribe, what the app subscribed is subscribed again after a
rejoin.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest
from livekit import rtc
from livekit.rtc._proto.track_pb2 import AudioTrackFeature  # not re-exported by livekit.rtc

from rtcstack import (
    Call,
    CallEvent,
    CallOptions,
    ConfigError,
    InvalidStateError,
    MediaStream,
    Participant,
    ReconnectPolicy,
    TrackInfo,
    TrackSourceName,
    create_call,
)
from rtcstack.testing import LoopbackServer
from rtcstack.testing._media import MediaPeer
from tests.audio import level, tone
from tests.calls import expect, within
from tests.servers import BOTH, AnyServer, force_rejoin

if TYPE_CHECKING:
    from conftest import Connect

WAIT = 20.0
FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=20, timeout=90)
MIC = rtc.TrackSource.SOURCE_MICROPHONE
SCREEN_AUDIO = rtc.TrackSource.SOURCE_SCREENSHARE_AUDIO

CallFactory = Callable[..., Call]


@pytest.fixture
async def make_call(server: AnyServer) -> AsyncIterator[CallFactory]:
    calls: list[Call] = []

    def factory(identity: str = "alice") -> Call:
        call = create_call(server.url, server.token(identity, room="demo"), options=CallOptions(reconnect=FAST))
        calls.append(call)
        return call

    yield factory
    await asyncio.gather(*(c.disconnect() for c in calls))


async def heard(room: rtc.Room, identity: str, sid: str, count: int = 50) -> float:
    """Subscribe-side check: the level of `count` frames of `identity`'s track `sid` as `room` receives it."""

    async def subscribed_track() -> rtc.Track:
        while True:
            participant = room.remote_participants.get(identity)
            publication = None if participant is None else participant.track_publications.get(sid)
            if publication is not None and publication.track is not None:
                return publication.track
            await asyncio.sleep(0.05)

    try:
        track = await asyncio.wait_for(subscribed_track(), WAIT)
    except asyncio.TimeoutError:
        raise AssertionError(f"{room.local_participant.identity} never subscribed {identity}'s {sid}") from None
    stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
    frames: list[rtc.AudioFrame] = []
    try:
        async with asyncio.timeout(WAIT):
            async for event in stream:
                frames.append(event.frame)
                if len(frames) >= count:
                    break
    except TimeoutError:
        raise AssertionError(f"only {len(frames)} of {count} frames of {sid} arrived in {WAIT} s") from None
    finally:
        await stream.aclose()
    return level(frames[count // 2 :])


def local_published(call: Call) -> list[TrackInfo]:
    seen: list[TrackInfo] = []

    def record(participant: Participant, track: TrackInfo) -> None:
        if participant.is_local:
            seen.append(track)

    call.on("track_published", record)
    return seen


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    async def poll() -> None:
        while not condition():  # noqa: ASYNC110  (SDK state has no event to wait on)
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what} did not happen within {timeout} s") from None


async def rejoin_after_the_sdk_gives_up(server: AnyServer, call: Call) -> None:
    """Refuse alice's resumes until the SDK gives up (~30 s) and the call makes its first rejoin, then let it in."""
    back = asyncio.ensure_future(call.wait_for("reconnected", timeout=90))
    server.refuse_joins(count=1000, status=503, identity="alice")
    await server.drop_signal("alice")
    await until(lambda: call.reconnect_attempt >= 2, "a rejoin after the SDK gave up", timeout=90)
    server.refuse_joins(count=0)
    await back


async def quick_rejoin(server: AnyServer, call: Call) -> None:
    """The SDK gives up at once (`force_rejoin`) and the call rejoins with a fresh Room."""
    first = call.room
    back = asyncio.ensure_future(call.wait_for("reconnected", timeout=WAIT))
    await force_rejoin(server, "alice")
    await back
    assert call.room is not first


@pytest.mark.servers(*BOTH)
async def test_a_tone_published_through_the_call_is_heard_again_after_a_rejoin(
    server: AnyServer, connect: Connect, make_call: CallFactory
) -> None:
    bob = await connect("bob")
    call = make_call()
    await call.connect()
    published = local_published(call)
    async with tone() as track:
        info = await call.publish_track(track, rtc.TrackPublishOptions(source=MIC))
        assert (info.source, info.kind) == ("microphone", "audio")
        assert await heard(bob.room, "alice", info.sid) > 1000
        await rejoin_after_the_sdk_gives_up(server, call)
        await until(lambda: any(t.sid != info.sid for t in published), "track_published with a new sid")
        again = next(t for t in published if t.sid != info.sid)
        assert (again.name, again.source) == ("mic", "microphone")
        assert list(call.room.local_participant.track_publications) == [again.sid]
        assert await heard(bob.room, "alice", again.sid) > 1000


@pytest.mark.servers(*BOTH)
async def test_a_track_published_on_call_room_is_published_again_and_an_unpublished_one_is_not(
    server: AnyServer, connect: Connect, make_call: CallFactory
) -> None:
    bob = await connect("bob")
    call = make_call()
    await call.connect()
    published = local_published(call)
    async with tone("kept") as kept, tone("dropped") as dropped:
        local = call.room.local_participant
        first = await local.publish_track(kept, rtc.TrackPublishOptions(source=MIC))
        gone = await local.publish_track(dropped, rtc.TrackPublishOptions(source=MIC))
        await local.unpublish_track(gone.sid)
        await until(lambda: len(published) == 2, "track_published for both direct publishes")
        await quick_rejoin(server, call)
        await until(lambda: len(published) == 3, "track_published of the kept track on the fresh Room")
        again = published[2]
        assert again.name == "kept" and again.source == "microphone" and again.sid != first.sid
        assert [p.name for p in call.room.local_participant.track_publications.values()] == ["kept"]
        assert await heard(bob.room, "alice", again.sid) > 1000
        assert [p.name for p in call.room.local_participant.track_publications.values()] == ["kept"]


async def next_frames(stream: MediaStream[rtc.AudioFrameEvent], count: int) -> list[rtc.AudioFrame]:
    frames: list[rtc.AudioFrame] = []
    try:
        async with asyncio.timeout(WAIT):
            async for event in stream:
                frames.append(event.frame)
                if len(frames) >= count:
                    return frames
    except TimeoutError:
        raise AssertionError(f"only {len(frames)} of {count} frames in {WAIT} s") from None
    raise AssertionError(f"the stream ended after {len(frames)} of {count} frames")


async def ends(stream: MediaStream[Any]) -> None:
    """The stream ends (after the frames it still buffers) within WAIT."""

    async def drain() -> None:
        async for _ in stream:
            pass

    try:
        await asyncio.wait_for(drain(), WAIT)
    except asyncio.TimeoutError:
        raise AssertionError(f"the stream did not end within {WAIT} s of the participant leaving") from None


FRESH = 150
"""Frames read after a fault: more than a stream buffers (100), so some were received after it."""


async def test_audio_stream_follows_a_participant_across_faults_and_ends_when_they_leave(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    await server.add_participant("demo", "caller", audio="tone:440")
    call = make_call()
    await call.connect()
    stream = call.audio_stream("caller")
    assert level((await next_frames(stream, 50))[25:]) > 1000
    faults: dict[str, Callable[[], Any]] = {
        "resume": lambda: server.drop_signal("alice"),
        "full restart": lambda: server.leave("alice", action="reconnect"),
        "rejoin": lambda: server.leave("alice", reason="server_shutdown"),
    }
    for name, fault in faults.items():
        room = call.room
        back = asyncio.ensure_future(call.wait_for("reconnected", timeout=WAIT))
        await fault()
        await back
        assert (call.room is room) == (name != "rejoin"), name
        assert level((await next_frames(stream, FRESH))[-50:]) > 1000, name
    await server.remove_participant("demo", "caller")
    await ends(stream)
    await stream.aclose()
    dropped = weakref.ref(stream)
    del stream
    gc.collect()
    assert dropped() is None, "the call still holds the ended stream"
    assert not [t for t in asyncio.all_tasks() if _of_a_stream(t)], "a task of the ended stream is still running"


@pytest.mark.servers(*BOTH)
async def test_audio_stream_follows_a_publisher_across_a_rejoin(
    server: AnyServer, connect: Connect, make_call: CallFactory
) -> None:
    bob = await connect("bob")
    call = make_call()
    await call.connect()
    stream = call.audio_stream("bob")
    async with tone() as track:
        await bob.room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=MIC))
        assert level((await next_frames(stream, 50))[25:]) > 1000
        await quick_rejoin(server, call)
        assert level((await next_frames(stream, FRESH))[-50:]) > 1000
    await bob.room.disconnect()
    await ends(stream)
    await stream.aclose()


async def test_audio_stream_follows_the_track_of_its_source(
    server: LoopbackServer, connect: Connect, make_call: CallFactory
) -> None:
    """Bob publishes a loud microphone and a quiet screen-share audio track: each stream gets its own source's,
    whether it was opened before the tracks came (a subscription attaches it) or after (it finds its track). With
    a stream of each source either way, matching on kind alone leaves two streams on one track."""
    call = make_call()
    await call.connect()
    sources: tuple[TrackSourceName, ...] = ("microphone", "screen_share_audio")
    early = {source: call.audio_stream("bob", source=source) for source in sources}
    bob = await connect("bob")
    async with tone("mic", amplitude=8000) as mic, tone("screen", amplitude=1000) as screen:
        await bob.room.local_participant.publish_track(mic, rtc.TrackPublishOptions(source=MIC))
        await bob.room.local_participant.publish_track(screen, rtc.TrackPublishOptions(source=SCREEN_AUDIO))
        publications = call.room.remote_participants["bob"].track_publications
        await until(lambda: [p.track is not None for p in publications.values()] == [True] * 2, "both subscribed")
        late = {source: call.audio_stream("bob", source=source) for source in sources}
        for when, streams in (("early", early), ("late", late)):
            loud = level((await next_frames(streams["microphone"], FRESH))[-50:])  # ~5660
            quiet = level((await next_frames(streams["screen_share_audio"], FRESH))[-50:])  # ~710
            assert loud > 4000 and 300 < quiet < 1500, (when, loud, quiet)
    for stream in (*early.values(), *late.values()):
        await stream.aclose()


async def test_without_auto_subscribe_what_the_app_subscribed_is_subscribed_again_after_a_rejoin(
    server: LoopbackServer,
) -> None:
    await server.add_participant("demo", "caller", audio="tone:440")
    options = CallOptions(reconnect=FAST, auto_subscribe=False)
    call = create_call(server.url, server.token("alice", room="demo"), options=options)
    try:
        await call.connect()
        stream = call.audio_stream("caller")
        (publication,) = call.room.remote_participants["caller"].track_publications.values()
        assert not publication.subscribed
        subscribed = asyncio.ensure_future(call.wait_for("track_subscribed", timeout=WAIT))
        publication.set_subscribed(True)  # the app's own choice, which the fresh Room of a rejoin does not know
        await subscribed
        assert level((await next_frames(stream, 50))[25:]) > 1000
        await quick_rejoin(server, call)
        assert level((await next_frames(stream, FRESH))[-50:]) > 1000
        (again,) = call.room.remote_participants["caller"].track_publications.values()
        assert again.subscribed and again.sid == publication.sid
    finally:
        await call.disconnect()


def _of_a_stream(task: asyncio.Task[Any]) -> bool:
    name = getattr(task.get_coro(), "__qualname__", "")
    return name.startswith("MediaStream.") or name == "_close"


@contextlib.asynccontextmanager
async def camera(room: rtc.Room, codec: rtc.VideoCodec.ValueType | None = None) -> AsyncIterator[None]:
    """Publish 320x180 video at ~15 fps on `room` (with `codec`, else the SDK's default VP8; simulcast) for the
    block."""
    source = rtc.VideoSource(320, 180)
    track = rtc.LocalVideoTrack.create_video_track("cam", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
    if codec is not None:
        options.video_codec = codec
    await room.local_participant.publish_track(track, options)

    async def play() -> None:
        data = bytearray(320 * 180 * 4)
        count = 0
        while True:
            count += 1
            data[: 320 * 4] = bytes([count % 256]) * (320 * 4)
            source.capture_frame(rtc.VideoFrame(320, 180, rtc.VideoBufferType.RGBA, data))
            await asyncio.sleep(1 / 15)

    player = asyncio.create_task(play())
    try:
        yield
    finally:
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await player


@pytest.mark.servers(*BOTH)
async def test_video_stream_follows_a_participant_across_a_rejoin(
    server: AnyServer, connect: Connect, make_call: CallFactory
) -> None:
    bob = await connect("bob")
    call = make_call()
    await call.connect()
    stream = call.video_stream("bob")

    async def frames(count: int) -> list[rtc.VideoFrameEvent]:
        got: list[rtc.VideoFrameEvent] = []
        try:
            async with asyncio.timeout(WAIT):
                async for event in stream:
                    got.append(event)
                    if len(got) >= count:
                        return got
        except TimeoutError:
            raise AssertionError(f"only {len(got)} of {count} video frames in {WAIT} s") from None
        raise AssertionError("the video stream ended")

    async with camera(bob.room):
        assert {(e.frame.width, e.frame.height) for e in await frames(5)} == {(320, 180)}
        await quick_rejoin(server, call)
        await frames(110)  # more than the stream buffers: frames of the fresh Room's track too
        await bob.room.disconnect()
        await ends(stream)
    await stream.aclose()


async def test_track_subscribed_once_per_real_subscription_across_faults(
    server: LoopbackServer, connect: Connect, make_call: CallFactory
) -> None:
    """No churn reaches the app. The call applies the track departures the SDK reports in order, each after the same
    grace; after each fault a marker participant publishes and unpublishes a track, and once its departure is out,
    any departure of the caller's track the fault left waiting is out too."""
    await server.add_participant("demo", "caller", audio="tone:440")
    marker = await connect("marker")
    call = make_call()
    events: list[tuple[str, str, str]] = []
    for name in ("track_subscribed", "track_unsubscribed"):
        call.on(name, lambda p, t, _n=name: events.append((_n, p.identity, t.sid)))  # type: ignore[misc]
    call.on("participant_left", lambda p: events.append(("participant_left", p.identity, "")))
    await call.connect()

    def caller_subscribed() -> bool:
        participant = call.room.remote_participants.get("caller")
        return participant is not None and any(p.subscribed for p in participant.track_publications.values())

    def of_caller() -> list[tuple[str, str, str]]:
        return [event for event in events if event[1] == "caller"]

    async def departures_out() -> None:
        async with tone("marker") as track:
            pub = await marker.room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=MIC))
            await until(lambda: ("track_subscribed", "marker", pub.sid) in events, "the marker's track_subscribed")
            await marker.room.local_participant.unpublish_track(pub.sid)
            await until(lambda: ("track_unsubscribed", "marker", pub.sid) in events, "the marker's departure")

    await until(caller_subscribed, "the first subscription")
    await until(lambda: len(of_caller()) == 1, "track_subscribed")
    sid = of_caller()[0][2]
    for fault in (
        lambda: server.drop_signal("alice"),
        lambda: server.leave("alice", action="reconnect"),
        lambda: server.leave("alice", reason="server_shutdown"),
    ):
        back = asyncio.ensure_future(call.wait_for("reconnected", timeout=WAIT))
        await fault()
        await back
        await until(caller_subscribed, "the subscription after a fault")
        await departures_out()
        assert of_caller() == [("track_subscribed", "caller", sid)]
    await server.remove_participant("demo", "caller")
    await until(lambda: len(of_caller()) == 3, "track_unsubscribed and participant_left")
    assert of_caller()[1:] == [("track_unsubscribed", "caller", sid), ("participant_left", "caller", "")]


@pytest.mark.servers(*BOTH)
async def test_data_received_tells_reliable_from_lossy(connect: Connect, make_call: CallFactory) -> None:
    call = make_call()
    got: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()
    call.on("data_received", lambda data, participant, topic, reliable: got.put_nowait((data, reliable)))
    await call.connect()
    bob = await connect("bob")
    await bob.room.local_participant.publish_data(b"sure", reliable=True)
    await bob.room.local_participant.publish_data(b"maybe", reliable=False)
    received = {await asyncio.wait_for(got.get(), WAIT) for _ in range(2)}
    assert received == {(b"sure", True), (b"maybe", False)}


async def test_track_subscription_failed_reaches_the_app_for_a_track_the_room_no_longer_has(
    server: LoopbackServer, connect: Connect, make_call: CallFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A race LiveKit has too: the server's answer to the subscriber's offer carries a track that is unpublished
    before the answer arrives. The SDK finds no publication for it and, after its own 5 s, reports the subscription
    failed (that is the only failure SDK 1.2.1 reports; it ignores SubscriptionResponse). The answer is held here
    until the unpublish has reached the app."""
    armed, made, go_on = asyncio.Event(), asyncio.Event(), asyncio.Event()
    answer = MediaPeer.answer

    async def held(self: MediaPeer, offer_sdp: str) -> tuple[str, dict[str, str]]:
        result = await answer(self, offer_sdp)
        if armed.is_set() and self.label == "bob/publisher" and result[1] and not made.is_set():
            made.set()
            await go_on.wait()
        return result

    monkeypatch.setattr(MediaPeer, "answer", held)
    call = make_call("bob")
    told: list[str] = []
    call.on("track_subscribed", lambda participant, track: told.append(track.sid))
    await call.connect()
    alice = await connect("alice")
    armed.set()
    async with tone() as track:
        publication = await alice.room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=MIC))
        await within("the server's answer carrying alice's tone to bob", made.wait())
        unpublished = expect(call, "track_unpublished")
        await alice.room.local_participant.unpublish_track(publication.sid)
        gone = await unpublished
        assert gone.track is not None and gone.track.sid == publication.sid
        failed = expect(call, "track_subscription_failed")
        go_on.set()
        event = await failed
    assert event.participant is not None and event.participant.identity == "alice"
    assert event.track_sid == publication.sid and event.error
    assert told == []  # the app was never told of a subscription to it


async def _take(stream: MediaStream[rtc.AudioFrameEvent], count: int) -> list[rtc.AudioFrame]:
    frames: list[rtc.AudioFrame] = []

    async def read() -> None:
        async for event in stream:
            frames.append(event.frame)
            if len(frames) >= count:
                return

    await within(f"{count} frames of the stream", read(), WAIT)
    return frames


async def test_audio_stream_follows_an_unpublish_and_a_republish_on_the_same_room(
    connect: Connect, make_call: CallFactory
) -> None:
    call = make_call()
    await call.connect()
    bob = await connect("bob")
    stream = call.audio_stream("bob")
    room = call.room
    async with tone("first") as track:
        first = await bob.room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=MIC))
        assert level((await _take(stream, 100))[-50:]) > 1000
        await bob.room.local_participant.unpublish_track(first.sid)
        await until(lambda: stream.track is None, "the stream letting go of the unpublished track")
    async with tone("second") as track:
        second = await bob.room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=MIC))
        await until(lambda: stream.track is not None and stream.track.sid == second.sid, "the stream taking it")
        frames = await _take(stream, 150)  # at most 100 were buffered before: the last 50 are the new track's
        assert level(frames[-50:]) > 1000
    assert not stream.ended and call.room is room  # one Room throughout: no fault, no rejoin
    await stream.aclose()


async def test_a_publish_that_a_rejoin_overtakes_is_published_on_the_fresh_room(
    server: LoopbackServer, make_call: CallFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK publishes the track on the Room of the moment, and the call's rejoin replaces that Room before
    `publish_track` returns: the app was told the track is published, so the fresh Room publishes it too."""
    call = make_call()
    published = local_published(call)
    real = rtc.LocalParticipant.publish_track
    back: list[asyncio.Future[CallEvent]] = []

    async def overtaken(self: rtc.LocalParticipant, track: Any, options: Any = None) -> Any:
        publication = await real(self, track, options)
        if not back:
            back.append(expect(call, "reconnected"))
            rejoining = expect(call, "reconnecting")
            await server.leave("alice", reason="server_shutdown")
            await rejoining
        return publication

    monkeypatch.setattr(rtc.LocalParticipant, "publish_track", overtaken)
    await call.connect()
    first_room = call.room
    async with tone() as track:
        info = await call.publish_track(track, rtc.TrackPublishOptions(source=MIC))
        await back[0]
        assert call.room is not first_room
        await until(lambda: any(t.sid != info.sid for t in published), "track_published of it on the fresh Room")
        again = next(t for t in published if t.sid != info.sid)
        assert list(call.room.local_participant.track_publications) == [again.sid]


async def test_a_direct_publish_keeps_its_codec_and_dtx_across_a_rejoin(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    """An H.264 camera and a microphone without DTX published directly on `call.room`: the publication cannot tell
    the codec (its mime type is empty until media flows), so the call keeps the options the publish asked for."""
    call = make_call()
    await call.connect()
    published = local_published(call)
    async with camera(call.room, rtc.VideoCodec.H264), tone() as mic:
        await call.room.local_participant.publish_track(mic, rtc.TrackPublishOptions(source=MIC, dtx=False))
        await until(lambda: len(published) == 2, "track_published for both direct publishes")
        first = {t.sid for t in published}
        await quick_rejoin(server, call)
        await until(lambda: len(published) == 4, "track_published of both tracks on the fresh Room")
        again = {t.kind: t.sid for t in published[2:]}
        assert not first & set(again.values())

        def codec(sid: str) -> str:
            return next((t.mime_type for t in server.received("alice") if t.track_sid == sid), "")

        await until(lambda: codec(again["video"]) != "", "video from the republished camera at the server")
        assert codec(again["video"]).lower() == "video/h264"
        features = call.room.local_participant.track_publications[again["audio"]].audio_features
        assert AudioTrackFeature.TF_NO_DTX in features  # the server saw disable_dtx in the AddTrackRequest


def local_events(call: Call) -> list[tuple[str, str]]:
    """The local participant's track_published / track_unpublished events, as (name, sid), in order."""
    seen: list[tuple[str, str]] = []
    for name in ("track_published", "track_unpublished"):
        call.on(name, lambda p, t, _n=name: seen.append((_n, t.sid)) if p.is_local else None)  # type: ignore[misc]
    return seen


def receives(server: LoopbackServer, sid: str) -> bool:
    """The server receives media of alice's track `sid`."""
    return any(track.track_sid == sid and track.packets > 0 for track in server.received("alice"))


async def test_unpublish_track_through_the_call_is_not_published_again(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    call = make_call()
    await call.connect()
    events = local_events(call)
    async with tone("kept") as kept, tone("dropped") as dropped:
        await call.publish_track(kept, rtc.TrackPublishOptions(source=MIC))
        info = await call.publish_track(dropped, rtc.TrackPublishOptions(source=MIC))
        await until(lambda: receives(server, info.sid), "the server receiving the track")
        await call.unpublish_track(info.sid)
        await until(lambda: not receives(server, info.sid), "the server seeing the track unpublished")
        assert events[-1] == ("track_unpublished", info.sid)
        await quick_rejoin(server, call)
        await until(lambda: len(events) == 4, "track_published of the kept track on the fresh Room")
        assert [p.name for p in call.room.local_participant.track_publications.values()] == ["kept"]


async def test_unpublish_track_just_after_a_rejoin_unpublishes_the_track_on_the_fresh_room(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    """Called at `reconnected`, before the call has published the track on the fresh Room: the old sid names it,
    and the call unpublishes what the republish makes (it failed with "track not found" and the track came back)."""
    call = make_call()
    await call.connect()
    events = local_events(call)
    async with tone() as track:
        info = await call.publish_track(track, rtc.TrackPublishOptions(source=MIC))
        await quick_rejoin(server, call)
        await call.unpublish_track(info.sid)
        assert call.room.local_participant.track_publications == {}
        await until(lambda: len(events) == 3, "track_unpublished of the republished track")
        (name, again), last = events[1], events[2]
        assert name == "track_published" and last == ("track_unpublished", again)
        await quick_rejoin(server, call)
        assert call.room.local_participant.track_publications == {} and len(events) == 3


async def test_publish_and_unpublish_need_a_connected_call(server: LoopbackServer, make_call: CallFactory) -> None:
    """While the call rejoins, both refuse with InvalidStateError, and the refused unpublish leaves the track kept."""
    call = make_call()
    await call.connect()
    events = local_events(call)
    async with tone() as track, tone("late") as late:
        info = await call.publish_track(track, rtc.TrackPublishOptions(source=MIC))
        server.refuse_joins(count=1000, status=503, identity="alice")
        back = asyncio.ensure_future(call.wait_for("reconnected", timeout=WAIT))
        await server.leave("alice", reason="server_shutdown")
        await until(lambda: call.connection_state == "reconnecting", "reconnecting")
        with pytest.raises(InvalidStateError, match="reconnecting"):
            await call.unpublish_track(info.sid)
        with pytest.raises(InvalidStateError, match="reconnecting"):
            await call.publish_track(late)
        server.refuse_joins(count=0)
        await back
        await until(lambda: len(events) == 2, "track_published of the kept track on the fresh Room")
        assert [p.name for p in call.room.local_participant.track_publications.values()] == ["mic"]
    await call.disconnect()
    with pytest.raises(ConfigError, match="no local track"):  # the call forgot its tracks when it ended
        await call.unpublish_track(info.sid)


async def test_a_cancelled_publish_track_is_withdrawn(make_call: CallFactory) -> None:
    """The SDK publishes a track whose publish_track was cancelled all the same (and then forgets it): the call
    unpublishes it once it is published."""
    call = make_call()
    await call.connect()
    events = local_events(call)
    async with tone() as track:
        publishing = asyncio.ensure_future(call.publish_track(track, rtc.TrackPublishOptions(source=MIC)))
        await asyncio.sleep(0)  # the publish request is on its way to the SDK's core
        publishing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publishing
        await until(lambda: len(events) == 2, "the cancelled publish's track published, then unpublished")
        sid = events[0][1]
        assert events == [("track_published", sid), ("track_unpublished", sid)]
        assert call.room.local_participant.track_publications == {}


async def test_the_sdk_full_restart_renames_a_publication(server: LoopbackServer, make_call: CallFactory) -> None:
    """The SDK's own full restart publishes the track again and the server gives it a new sid: the call tells the
    new sid (`track_published`), and the old one still names the track."""
    call = make_call()
    await call.connect()
    events = local_events(call)
    async with tone() as track:
        info = await call.publish_track(track, rtc.TrackPublishOptions(source=MIC))
        room = call.room
        back = asyncio.ensure_future(call.wait_for("reconnected", timeout=WAIT))
        await room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT)
        await back
        assert call.room is room  # the SDK's own restart, not a rejoin
        await until(lambda: len(events) == 2, "track_published with the new sid")
        renamed = events[1][1]
        assert events == [("track_published", info.sid), ("track_published", renamed)] and renamed != info.sid
        assert [t.sid for t in call.local_participant.tracks] == [renamed]
        await until(lambda: receives(server, renamed), "the server receiving the republished track")
        await call.unpublish_track(info.sid)
        await until(lambda: not receives(server, renamed), "the server seeing the track unpublished")
        assert events[-1] == ("track_unpublished", renamed)
