"""The pump's media bookkeeping with a fake Room: publications kept across a rejoin, subscription events without
churn, streams that follow a participant. Every behaviour here is also tested against the real SDK on
LoopbackServer (tests/integration/test_media.py); the fake makes the orderings cheap to drive exactly.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import weakref
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from livekit import rtc
from livekit.rtc._proto.track_pb2 import AudioTrackFeature

from rtcstack import ConfigError, InvalidStateError, PublishError
from rtcstack._call import Call
from rtcstack._media import Subscriptions, options_from_publication
from rtcstack._models import Participant, TrackInfo
from rtcstack._options import ReconnectPolicy
from rtcstack._streams import MediaStream
from tests.fakes import FakeParticipant
from tests.unit.test_call_pump import CONNECTED, RECONNECTING, FakePublication, FakeRoom, Rooms, make_call, record

GRACE = 0.4  # a little over the pump's grace for departures (0.25 s)
FAST = ReconnectPolicy(initial_delay=0.0, max_delay=0.0)
_SIDS = itertools.count(1)
"""Sids of the fake publications: unique in the run, as the server's are (a Room's id may repeat)."""


class FakeLocal(FakeParticipant):
    """A local participant whose publish_track answers like the SDK (the FFI event comes separately)."""

    room: FakeRoom
    fail = False
    published: list[tuple[Any, rtc.TrackPublishOptions]]

    async def publish_track(self, track: Any, options: rtc.TrackPublishOptions) -> FakePublication:
        if self.fail:
            raise rtc.participant.PublishTrackError("refused")
        self.published.append((track, options))
        pub = RichPublication(f"TR_local_{next(_SIDS)}", source=options.source)
        self.track_publications[pub.sid] = pub
        self.room.emit("local_track_published", pub, track)
        return pub

    async def unpublish_track(self, sid: str) -> None:
        pub = self.track_publications.pop(sid)
        self.room.emit("local_track_unpublished", pub)


class LocalRooms(Rooms):
    """Rooms whose local participant publishes like the SDK."""

    def __call__(self) -> FakeRoom:
        room = super().__call__()
        local = FakeLocal("me", sid="PA_me")
        local.room, local.published = room, []
        room.local_participant = local
        return room


def local_rooms(*scripts: Any) -> Rooms:
    return LocalRooms(*scripts)


class RichPublication(FakePublication):
    """A publication with the fields `options_from_publication` reads."""

    def __init__(self, sid: str, **kw: Any) -> None:
        self.audio_features: list[int] = kw.pop("audio_features", [])
        super().__init__(sid, **kw)
        self.simulcasted = False
        self.mime_type = ""
        self.frame_metadata_features: list[int] = []


def tone() -> rtc.LocalAudioTrack:
    return rtc.LocalAudioTrack.create_audio_track("tone", rtc.AudioSource(48000, 1))


async def rejoin(call: Call, room: FakeRoom) -> None:
    back = asyncio.ensure_future(call.wait_for("reconnected", timeout=5))
    room.emit("disconnected", rtc.DisconnectReason.SIGNAL_CLOSE)
    await back
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_rejoin_publishes_again_what_was_published_with_the_same_options() -> None:
    rooms = local_rooms()
    call = make_call(rooms, reconnect=FAST)
    published = record(call, "track_published")
    await call.connect()
    track = tone()
    info = await call.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, dtx=False))
    assert info.source == "microphone" and published[-1][2].sid == info.sid
    await rejoin(call, rooms.made[0])
    again = rooms.made[1].local_participant.published  # type: ignore[attr-defined]  # a FakeLocal
    assert [t for t, _ in again] == [track]
    assert again[0][1].dtx is False and again[0][1].source == rtc.TrackSource.SOURCE_MICROPHONE
    assert published[-1][1].is_local and published[-1][2].sid != info.sid
    await call.unpublish_track(info.sid)  # the old sid still names it
    assert rooms.made[1].local_participant.track_publications == {}
    await call.disconnect()


async def test_a_track_published_on_call_room_is_kept_and_an_unpublished_one_is_not() -> None:
    rooms = local_rooms()
    call = make_call(rooms, reconnect=FAST)
    await call.connect()
    local = rooms.made[0].local_participant
    direct, dropped = tone(), tone()
    await local.publish_track(direct, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_SCREENSHARE_AUDIO))
    gone = await local.publish_track(dropped, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    await local.unpublish_track(gone.sid)
    await asyncio.sleep(GRACE)
    await rejoin(call, rooms.made[0])
    again = rooms.made[1].local_participant.published  # type: ignore[attr-defined]  # a FakeLocal
    assert [t for t, _ in again] == [direct]
    assert again[0][1].source == rtc.TrackSource.SOURCE_SCREENSHARE_AUDIO
    await call.disconnect()


async def test_a_failed_publish_after_a_rejoin_is_a_local_track_unpublished(caplog: pytest.LogCaptureFixture) -> None:
    rooms = local_rooms()
    call = make_call(rooms, reconnect=FAST)
    unpublished = record(call, "track_unpublished")
    await call.connect()
    info = await call.publish_track(tone())
    rooms.made[0].emit("disconnected", rtc.DisconnectReason.SIGNAL_CLOSE)
    while len(rooms.made) < 2:  # noqa: ASYNC110  (the rejoin's Room is made in a task)
        await asyncio.sleep(0)
    rooms.made[1].local_participant.fail = True  # type: ignore[attr-defined]  # a FakeLocal
    await call.wait_for("track_unpublished", timeout=5)
    assert [(e[1].identity, e[2].sid) for e in unpublished] == [("me", info.sid)]
    assert "could not publish track" in caplog.text
    await rejoin(call, rooms.made[1])
    assert rooms.made[2].local_participant.published == []  # type: ignore[attr-defined]  # a FakeLocal
    await call.disconnect()


async def test_publish_track_errors() -> None:
    rooms = local_rooms()
    call = make_call(rooms)
    with pytest.raises(InvalidStateError):
        await call.publish_track(tone())
    await call.connect()
    with pytest.raises(ConfigError):
        await call.publish_track("mic")  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(ConfigError):
        await call.publish_track(tone(), options={"dtx": False})  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(ConfigError):
        await call.unpublish_track("TR_nothing")
    rooms.made[0].local_participant.fail = True  # type: ignore[attr-defined]  # a FakeLocal
    with pytest.raises(PublishError) as info:
        await call.publish_track(tone())
    assert isinstance(info.value.__cause__, rtc.participant.PublishTrackError)
    await rejoin(call, rooms.made[0])
    assert rooms.made[1].local_participant.published == []  # type: ignore[attr-defined]  # a FakeLocal
    await call.disconnect()


def test_options_recovered_from_a_publication() -> None:
    video = RichPublication("TR_v", kind=rtc.TrackKind.KIND_VIDEO, source=rtc.TrackSource.SOURCE_CAMERA)
    video.simulcasted, video.mime_type = True, "video/H264"
    options = options_from_publication(video)
    assert options.source == rtc.TrackSource.SOURCE_CAMERA and options.simulcast is True
    assert options.video_codec == rtc.VideoCodec.H264
    audio = RichPublication("TR_a", audio_features=[AudioTrackFeature.TF_NO_DTX])
    assert options_from_publication(audio).dtx is False
    assert not options_from_publication(RichPublication("TR_b")).HasField("dtx")


# -- subscriptions --------------------------------------------------------------------------------------------


def person(identity: str, *tracks: TrackInfo) -> Participant:
    return Participant(
        identity=identity,
        sid=f"PA_{identity}",
        name="",
        kind="standard",
        state="active",
        connection_quality="unknown",
        metadata="",
        attributes={},
        is_local=False,
        is_speaking=False,
        tracks=list(tracks),
        joined_at=None,
    )


def mic(sid: str, subscribed: bool = True) -> TrackInfo:
    return TrackInfo(sid=sid, name="mic", kind="audio", source="microphone", muted=False, subscribed=subscribed)


def test_subscriptions_reconcile_a_reconnect_episode() -> None:
    book = Subscriptions()
    bob = person("bob")
    assert [e.name for e in book.subscribed(bob, mic("TR_1"))] == ["track_subscribed"]
    assert book.subscribed(bob, mic("TR_1")) == []
    assert [e.name for e in book.subscribed(bob, mic("TR_2"))] == ["track_subscribed"]
    book.hold()
    assert book.unsubscribed(bob, "TR_1") == [] and book.subscribed(bob, mic("TR_3")) == []
    # after the episode: TR_1 is still published (not yet subscribed again), TR_2 is gone, TR_3 is new
    out = book.release([(bob, mic("TR_1", subscribed=False)), (bob, mic("TR_3"))])
    assert [(e.name, e.args[1].sid, e.args[1].subscribed) for e in out] == [
        ("track_unsubscribed", "TR_2", False),
        ("track_subscribed", "TR_3", True),
    ]
    assert book.subscribed(bob, mic("TR_1")) == []  # TR_1 came back: the app was never told it went
    out = book.left(bob)
    assert sorted(e.args[1].sid for e in out) == ["TR_1", "TR_3"]
    assert {e.name for e in out} == {"track_unsubscribed"}


async def test_track_events_in_order_and_a_full_restart_churns_nothing() -> None:
    rooms = local_rooms()
    call = make_call(rooms)
    names = (
        "track_published",
        "track_unpublished",
        "track_subscribed",
        "track_unsubscribed",
        "participant_left",
        "reconnected",
    )
    seen = record(call, *names)
    await call.connect()
    room = rooms.made[0]
    bob = room.add("bob")
    room.emit("participant_connected", bob)
    pub = FakePublication("TR_b", subscribed=True)
    bob.track_publications[pub.sid] = pub
    room.emit("track_published", pub, bob)
    room.emit("track_subscribed", object(), pub, bob)
    assert seen[-1][0] == "track_subscribed" and seen[-1][2].subscribed
    # a full restart: every track and participant reported gone, then RECONNECTING, then all back
    room.emit("track_unsubscribed", object(), pub, bob)
    room.emit("track_unpublished", pub, bob)
    del room.remote_participants["bob"]
    room.emit("participant_disconnected", bob)
    room.emit("connection_state_changed", RECONNECTING)
    await asyncio.sleep(GRACE)
    room.remote_participants["bob"] = bob
    room.emit("participant_connected", bob)
    room.emit("track_published", pub, bob)
    room.emit("connection_state_changed", CONNECTED)
    room.emit("track_subscribed", object(), pub, bob)
    await asyncio.sleep(GRACE)
    assert [e[0] for e in seen] == ["track_published", "track_subscribed", "reconnected"]
    # a real unpublish and leave: unsubscribed, unpublished, then left
    pub.subscribed = False
    room.emit("track_unsubscribed", object(), pub, bob)
    room.emit("track_unpublished", pub, bob)
    del room.remote_participants["bob"]
    bob.disconnect_reason = rtc.DisconnectReason.CLIENT_INITIATED
    room.emit("participant_disconnected", bob)
    await asyncio.sleep(GRACE)
    assert [e[0] for e in seen[3:]] == ["track_unsubscribed", "track_unpublished", "participant_left"]
    await call.disconnect()


async def test_subscription_failed_and_reliable_flag() -> None:
    rooms = local_rooms()
    call = make_call(rooms)
    seen = record(call, "track_subscription_failed", "data_received")
    await call.connect()
    room = rooms.made[0]
    bob = room.add("bob")
    room.emit("participant_connected", bob)
    room.emit("track_subscription_failed", bob, "TR_x", "no such track")
    room.emit("data_received", rtc.DataPacket(b"r", rtc.DataPacketKind.KIND_RELIABLE, bob, None))  # type: ignore[arg-type]  # a fake participant
    room.emit("data_received", rtc.DataPacket(b"l", rtc.DataPacketKind.KIND_LOSSY, bob, None))  # type: ignore[arg-type]  # a fake participant
    assert [(e[0], e[2], e[3]) for e in seen] == [
        ("track_subscription_failed", "TR_x", "no such track"),
        ("data_received", bob_snapshot(call), None),
        ("data_received", bob_snapshot(call), None),
    ]
    assert [e[4] for e in seen[1:]] == [True, False]
    await call.disconnect()


async def test_a_failure_ends_a_subscription_the_app_was_told_of() -> None:
    """The SDK reports a subscription the app was told of as failed: the app hears it end, then why."""
    rooms = local_rooms()
    call = make_call(rooms)
    seen = record(call, "track_subscribed", "track_unsubscribed", "track_subscription_failed")
    await call.connect()
    room = rooms.made[0]
    bob = room.add("bob")
    room.emit("participant_connected", bob)
    pub = FakePublication("TR_b", subscribed=True)
    bob.track_publications[pub.sid] = pub
    room.emit("track_subscribed", object(), pub, bob)
    room.emit("track_subscription_failed", bob, "TR_b", "track not found")
    room.emit("track_subscription_failed", bob, "TR_b", "track not found")  # no longer told of: only the failure
    assert [(e[0], e[2] if e[0] == "track_subscription_failed" else e[2].sid) for e in seen] == [
        ("track_subscribed", "TR_b"),
        ("track_unsubscribed", "TR_b"),
        ("track_subscription_failed", "TR_b"),
        ("track_subscription_failed", "TR_b"),
    ]
    assert not seen[1][2].subscribed
    await call.disconnect()


def bob_snapshot(call: Call) -> Participant | None:
    return next(p for p in call.participants if p.identity == "bob")


# -- streams --------------------------------------------------------------------------------------------------


class FakeSdkStream:
    """What the pump reads from an rtc.AudioStream: frames until closed."""

    opened: ClassVar[list[FakeSdkStream]] = []

    def __init__(self, track: Any) -> None:
        self.track = track
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False
        FakeSdkStream.opened.append(self)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self.frames.get()

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def sdk_streams(monkeypatch: pytest.MonkeyPatch) -> list[FakeSdkStream]:
    FakeSdkStream.opened = []
    monkeypatch.setattr(rtc.AudioStream, "from_track", lambda *, track, **kw: FakeSdkStream(track))
    return FakeSdkStream.opened


async def next_frame(stream: MediaStream[Any]) -> Any:
    return await asyncio.wait_for(stream.__anext__(), 5)


async def test_audio_stream_follows_the_track_across_a_rejoin_and_ends_when_they_leave(
    sdk_streams: list[FakeSdkStream],
) -> None:
    async def bob_is_there(room: FakeRoom) -> None:
        room.remote_participants["bob"] = bob

    rooms = local_rooms(None, bob_is_there)
    call = make_call(rooms, reconnect=FAST)
    await call.connect()
    room = rooms.made[0]
    bob = room.add("bob")
    room.emit("participant_connected", bob)
    stream = call.audio_stream("bob")
    assert sdk_streams == []  # no track yet: nothing to read
    first_track = object()
    pub = FakePublication("TR_b")
    bob.track_publications[pub.sid] = pub
    room.emit("track_subscribed", first_track, pub, bob)
    sdk_streams[0].frames.put_nowait("frame-1")
    assert await next_frame(stream) == "frame-1"
    await rejoin(call, room)
    assert sdk_streams[0].closed
    fresh = rooms.made[1]
    fresh.emit("track_subscribed", object(), pub, bob)
    sdk_streams[1].frames.put_nowait("frame-2")
    assert await next_frame(stream) == "frame-2"
    del fresh.remote_participants["bob"]
    bob.disconnect_reason = rtc.DisconnectReason.CLIENT_INITIATED
    fresh.emit("participant_disconnected", bob)
    with pytest.raises(StopAsyncIteration):
        await next_frame(stream)
    await stream.aclose()
    assert sdk_streams[1].closed
    dropped = weakref.ref(stream)
    del stream
    gc.collect()
    assert dropped() is None, "the call still holds the ended stream"
    await call.disconnect()


async def test_a_reader_that_falls_behind_gets_the_newest_100_frames(sdk_streams: list[FakeSdkStream]) -> None:
    """The README's bound: a stream keeps 100 frames for a slow reader, the oldest going first."""
    rooms = local_rooms()
    call = make_call(rooms)
    await call.connect()
    room = rooms.made[0]
    bob = room.add("bob")
    room.emit("participant_connected", bob)
    stream = call.audio_stream("bob")
    pub = FakePublication("TR_b")
    bob.track_publications[pub.sid] = pub
    room.emit("track_subscribed", object(), pub, bob)
    (sdk,) = sdk_streams
    for n in range(150):
        sdk.frames.put_nowait(n)

    async def piped() -> None:
        while not sdk.frames.empty():  # noqa: ASYNC110  (the pipe takes them all in one step once it runs)
            await asyncio.sleep(0)

    await asyncio.wait_for(piped(), 5)
    assert [await next_frame(stream) for _ in range(100)] == list(range(50, 150))
    sdk.frames.put_nowait("next")
    assert await next_frame(stream) == "next"  # nothing else was kept
    await call.disconnect()


async def test_audio_stream_ends_with_the_call_and_on_aclose(sdk_streams: list[FakeSdkStream]) -> None:
    rooms = local_rooms()
    call = make_call(rooms)
    with pytest.raises(ConfigError):
        call.audio_stream("me")
    with pytest.raises(ConfigError):
        call.audio_stream("bob", source="camera")
    with pytest.raises(ConfigError):
        call.audio_stream("bob", sample_rate=0)
    with pytest.raises(ConfigError):
        call.video_stream("bob", source="microphone")
    await call.connect()
    room = rooms.made[0]
    bob = room.add("bob")
    pub = FakePublication("TR_b")
    pub.track = object()  # type: ignore[attr-defined]  # subscribed before the stream was asked for
    bob.track_publications[pub.sid] = pub
    closed_early, kept = call.audio_stream("bob"), call.audio_stream("bob")
    assert [s.track for s in sdk_streams] == [pub.track, pub.track]  # type: ignore[attr-defined]
    await closed_early.aclose()
    assert sdk_streams[0].closed and not sdk_streams[1].closed
    with pytest.raises(StopAsyncIteration):
        await next_frame(closed_early)
    await call.disconnect()
    assert sdk_streams[1].closed
    with pytest.raises(StopAsyncIteration):
        await next_frame(kept)
    with pytest.raises(InvalidStateError):
        call.audio_stream("bob")
