"""LoopbackServer as a small SFU: the real SDK publishes, the server forwards encoded frames, another SDK receives."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from livekit import rtc

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
