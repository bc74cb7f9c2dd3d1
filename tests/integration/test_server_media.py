"""LoopbackServer as a small SFU: the real SDK publishes, the server forwards encoded frames, another SDK receives."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from livekit import rtc

from rtcstack.testing import LoopbackServer

if TYPE_CHECKING:
    from conftest import Client, Connect

WAIT = 15.0
LEGACY = rtc.RoomOptions(single_peer_connection=False)
MODES = pytest.mark.parametrize("options", [None, LEGACY], ids=["single_pc", "legacy"])


@contextlib.asynccontextmanager
async def tone(room: rtc.Room, name: str = "mic") -> AsyncIterator[rtc.LocalTrackPublication]:
    """Publish a 440 Hz tone on ``room`` (10 ms frames, paced in real time) for the block's duration."""
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await room.local_participant.publish_track(track, options)

    async def play() -> None:
        frame = rtc.AudioFrame.create(48000, 1, 480)
        samples = frame.data
        step = 0
        while True:
            for i in range(480):
                samples[i] = int(8000 * math.sin(2 * math.pi * 440 * (step * 480 + i) / 48000))
            step += 1
            await source.capture_frame(frame)

    player = asyncio.create_task(play())
    try:
        yield publication
    finally:
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await player
        await source.aclose()


def subscribed(client: Client) -> None:
    """Record ``track_subscribed`` / ``track_unsubscribed`` on ``client`` (the fixture records other events)."""
    for name in ("track_subscribed", "track_unsubscribed", "track_unpublished"):
        client.room.on(name, lambda *args, name=name: client.record(name, *args))


async def audio_frames(track: rtc.Track, count: int, timeout: float = WAIT) -> list[rtc.AudioFrame]:
    """The first ``count`` frames ``track`` yields (fails if they do not come within ``timeout``)."""
    stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
    frames: list[rtc.AudioFrame] = []

    async def take() -> None:
        async for event in stream:
            frames.append(event.frame)
            if len(frames) >= count:
                return

    try:
        await asyncio.wait_for(take(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"only {len(frames)} of {count} audio frames arrived in {timeout} s") from None
    finally:
        await stream.aclose()
    return frames


def level(frames: list[rtc.AudioFrame]) -> float:
    """RMS of the frames' samples (0..32767)."""
    samples = [s for f in frames for s in f.data]
    return math.sqrt(sum(s * s for s in samples) / len(samples))


@MODES
async def test_audio_is_forwarded_to_a_subscriber(connect: Connect, options: rtc.RoomOptions | None) -> None:
    alice = await connect("alice", options=options)
    bob = await connect("bob", options=options)
    subscribed(bob)

    async with tone(alice.room) as publication:
        track, pub, participant = await bob.wait_for("track_subscribed")
        assert (pub.sid, participant.identity, track.kind) == (publication.sid, "alice", rtc.TrackKind.KIND_AUDIO)
        frames = await audio_frames(track, 100)
        assert level(frames[-50:]) > 1000  # the tone, not silence


@contextlib.asynccontextmanager
async def camera(
    room: rtc.Room, options: rtc.TrackPublishOptions | None = None
) -> AsyncIterator[rtc.LocalTrackPublication]:
    """Publish 640x360 video at ~30 fps (the SDK's default options: VP8, simulcast), each frame stamped with a user
    timestamp in its metadata (sent in the packet trailer), for the block's duration."""
    source = rtc.VideoSource(640, 360)
    track = rtc.LocalVideoTrack.create_video_track("cam", source)
    options = options or rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA, frame_metadata_features=[rtc.FrameMetadataFeature.FMF_USER_TIMESTAMP]
    )
    publication = await room.local_participant.publish_track(track, options)

    async def play() -> None:
        data = bytearray(640 * 360 * 4)
        count = 0
        while True:
            count += 1
            data[: 640 * 4] = bytes([count % 256]) * (640 * 4)  # a changing line, so frames differ
            frame = rtc.VideoFrame(640, 360, rtc.VideoBufferType.RGBA, data)
            source.capture_frame(frame, metadata=rtc.FrameMetadata(user_timestamp=1_000_000 + count))
            await asyncio.sleep(1 / 30)

    player = asyncio.create_task(play())
    try:
        yield publication
    finally:
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await player
        await source.aclose()


async def video_frames(track: rtc.Track, count: int, timeout: float = WAIT) -> list[rtc.VideoFrameEvent]:
    """The first ``count`` frame events ``track`` yields (fails if they do not come within ``timeout``)."""
    stream = rtc.VideoStream(track)
    events: list[rtc.VideoFrameEvent] = []

    async def take() -> None:
        async for event in stream:
            events.append(event)
            if len(events) >= count:
                return

    try:
        await asyncio.wait_for(take(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"only {len(events)} of {count} video frames arrived in {timeout} s") from None
    finally:
        await stream.aclose()
    return events


@MODES
async def test_simulcast_video_is_forwarded_with_its_frame_trailer(
    connect: Connect, options: rtc.RoomOptions | None
) -> None:
    alice = await connect("alice", options=options)
    bob = await connect("bob", options=options)
    subscribed(bob)

    async with camera(alice.room) as publication:
        track, pub, _ = await bob.wait_for("track_subscribed")
        assert (pub.sid, track.kind, pub.simulcasted) == (publication.sid, rtc.TrackKind.KIND_VIDEO, True)
        events = await video_frames(track, 20)
        assert events[-1].frame.width == 640  # the top layer is the one forwarded
        stamps = [e.metadata.user_timestamp for e in events if e.metadata is not None]
        assert stamps and all(s > 1_000_000 for s in stamps)  # the packet trailer crossed the server intact


async def test_a_later_subscriber_gets_what_was_published_before(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")
    async with tone(alice.room), camera(alice.room):
        bob = await connect("bob")
        subscribed(bob)
        await bob.wait_count("track_subscribed", 2)
        kinds = {args[0].kind: args[0] for name, args in bob.events if name == "track_subscribed"}
        await audio_frames(kinds[rtc.TrackKind.KIND_AUDIO], 20)
        await video_frames(kinds[rtc.TrackKind.KIND_VIDEO], 5)
        received = {t.kind: t for t in server.received("alice")}
        assert received["audio"].source == "microphone" and received["audio"].mime_type.lower() == "audio/opus"
        assert received["video"].source == "camera" and received["video"].keyframes >= 1
        assert received["audio"].audio_level_dbfs is not None and received["audio"].audio_level_dbfs > -40
