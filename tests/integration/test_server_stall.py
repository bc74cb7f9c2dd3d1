"""LoopbackServer.stall_media / resume_media with the real SDK: what a subscriber's own RTC stats see while a
publisher's track is stalled at the server (no packets, or with mode="no_frames" packets no decoder accepts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, NamedTuple

import pytest
from livekit import rtc

from rtcstack._tasks import Tasks
from rtcstack.testing import LoopbackServer
from tests.calls import within
from tests.integration.test_server_media import LEGACY, camera, subscribed, tone

if TYPE_CHECKING:
    from conftest import Client, Connect

WAIT = 15.0


class Inbound(NamedTuple):
    packets: int
    frames: int
    keyframes: int


async def inbound(room: rtc.Room, kind: str) -> Inbound:
    """RTP packets received, frames and keyframes decoded of ``room``'s inbound ``kind`` ("audio" / "video")
    streams, summed. With a single peer connection (the SDK's default) they are among the publisher's stats."""
    stats = await room.get_rtc_stats()
    packets = frames = keyframes = 0
    for entry in [*stats.publisher_stats, *stats.subscriber_stats]:
        if entry.WhichOneof("stats") == "inbound_rtp" and entry.inbound_rtp.stream.kind == kind:
            packets += entry.inbound_rtp.received.packets_received
            frames += entry.inbound_rtp.inbound.frames_decoded
            keyframes += entry.inbound_rtp.inbound.key_frames_decoded
    return Inbound(packets, frames, keyframes)


def sent(server: LoopbackServer, identity: str, source: str) -> int:
    """RTP packets the server received from ``identity``'s ``source`` track (0 while there is none)."""
    return sum(t.packets for t in server.received(identity) if t.source == source)


async def beyond(
    room: rtc.Room, kind: str, packets: int = 0, frames: int | None = None, keyframes: int | None = None
) -> Inbound:
    """Wait until ``room`` has received more than ``packets`` ``kind`` packets (and decoded more than ``frames``
    frames and ``keyframes`` keyframes, if given); returns what it has then."""

    async def poll() -> Inbound:
        while True:
            now = await inbound(room, kind)
            if (
                now.packets > packets
                and (frames is None or now.frames > frames)
                and (keyframes is None or now.keyframes > keyframes)
            ):
                return now
            await asyncio.sleep(0.05)

    wanted = f"more than {packets} packets"
    wanted += f", {frames} frames decoded" if frames is not None else ""
    wanted += f", {keyframes} keyframes decoded" if keyframes is not None else ""
    return await within(f"{kind} reaching the subscriber ({wanted})", poll(), WAIT)


async def server_gets(server: LoopbackServer, identity: str, source: str, more: int) -> None:
    """Wait until the server received ``more`` packets of ``identity``'s ``source`` track than it has now."""
    start = sent(server, identity, source)

    async def poll() -> None:
        while sent(server, identity, source) < start + more:  # noqa: ASYNC110  (server-side counts: no event)
            await asyncio.sleep(0.02)

    await within(f"{more} more {source} packets from {identity} at the server", poll(), WAIT)


@contextlib.asynccontextmanager
async def watching(track: rtc.Track) -> AsyncIterator[None]:
    """Drain a VideoStream of ``track`` (a subscriber that shows the video) for the block's duration."""
    stream = rtc.VideoStream(track)

    async def drain() -> None:
        async for _ in stream:
            pass

    tasks = Tasks("test", logging.getLogger(__name__))
    tasks.spawn(drain(), "drain the video")
    try:
        yield
    finally:
        await tasks.close()
        await stream.aclose()


@pytest.fixture(params=[None, LEGACY], ids=["single_pc", "legacy"])
async def pair(connect: Connect, request: pytest.FixtureRequest) -> tuple[Client, Client]:
    """alice, and bob, who records his subscriptions (with one peer connection each, or two: legacy)."""
    alice = await connect("alice", options=request.param)
    bob = await connect("bob", options=request.param)
    subscribed(bob)
    return alice, bob


async def video_track(bob: Client) -> rtc.Track:
    track, _, _ = await bob.wait_for("track_subscribed", lambda t, *_: t.kind == rtc.TrackKind.KIND_VIDEO)
    assert isinstance(track, rtc.Track)
    return track


async def test_a_stalled_source_reaches_no_subscriber_while_the_server_still_receives_it(
    server: LoopbackServer, pair: tuple[Client, Client]
) -> None:
    alice, bob = pair
    async with tone(alice.room), camera(alice.room), watching(await video_track(bob)):
        audio = await beyond(bob.room, "audio")
        video = await beyond(bob.room, "video", frames=0)
        await server.stall_media("alice", "microphone")
        # what was in flight when it stalled arrives; the camera goes on meanwhile
        await server_gets(server, "alice", "microphone", 25)
        video = await beyond(bob.room, "video", video.packets, video.frames)
        stalled = (await inbound(bob.room, "audio")).packets
        await server_gets(server, "alice", "microphone", 100)  # two more seconds of audio sent to the server
        await beyond(bob.room, "video", video.packets, video.frames)  # ...and of video reaching bob
        assert (await inbound(bob.room, "audio")).packets == stalled, "packets of a stalled track reached bob"
        assert audio.packets <= stalled
        await server.resume_media("alice", "microphone")
        await beyond(bob.room, "audio", stalled)


async def test_a_stalled_camera_decodes_again_after_resume(server: LoopbackServer, pair: tuple[Client, Client]) -> None:
    alice, bob = pair
    async with tone(alice.room), camera(alice.room), watching(await video_track(bob)):
        await beyond(bob.room, "video", frames=0)
        audio = await beyond(bob.room, "audio")
        await server.stall_media("alice", "camera")
        await server_gets(server, "alice", "camera", 30)
        audio = await beyond(bob.room, "audio", audio.packets)
        stalled = await inbound(bob.room, "video")
        await server_gets(server, "alice", "camera", 100)
        await beyond(bob.room, "audio", audio.packets)  # the microphone goes on
        assert await inbound(bob.room, "video") == stalled, "video of a stalled camera reached bob"
        await server.resume_media("alice", "camera")
        # packets again, and frames the decoder accepts, from a keyframe the server asked the publisher for
        await beyond(bob.room, "video", stalled.packets, stalled.frames, stalled.keyframes)


async def test_a_stall_of_every_source_holds_for_a_track_published_after_it(
    server: LoopbackServer, pair: tuple[Client, Client]
) -> None:
    alice, bob = pair
    await server.stall_media("alice")
    async with tone(alice.room):
        await bob.wait_for("track_subscribed")  # announced and subscribed as usual: only its media is held
        await server_gets(server, "alice", "microphone", 100)
        assert (await inbound(bob.room, "audio")).packets == 0
        await server.resume_media("alice")
        await beyond(bob.room, "audio")


async def test_a_frozen_camera_sends_packets_no_decoder_accepts(
    server: LoopbackServer, pair: tuple[Client, Client]
) -> None:
    alice, bob = pair
    async with camera(alice.room), watching(await video_track(bob)):
        flowing = await beyond(bob.room, "video", frames=0)
        await server.stall_media("alice", "camera", mode="no_frames")
        await server_gets(server, "alice", "camera", 30)
        frozen = await beyond(bob.room, "video", flowing.packets)
        await server_gets(server, "alice", "camera", 100)
        later = await beyond(bob.room, "video", frozen.packets)  # packets go on arriving...
        assert later.frames == frozen.frames, "frames were decoded from a frozen camera"  # ...none is decoded
        await server.resume_media("alice", "camera")
        await beyond(bob.room, "video", later.packets, frozen.frames)


async def test_stall_media_refuses_what_it_cannot_stall(server: LoopbackServer, connect: Connect) -> None:
    await connect("alice")
    with pytest.raises(LookupError, match="no participant 'nobody'"):
        await server.stall_media("nobody")
    with pytest.raises(LookupError, match="no participant 'nobody'"):
        await server.resume_media("nobody", "camera")
    with pytest.raises(ValueError, match=r"source must be one of .*'microphone'.*not 'mouth'"):
        await server.stall_media("alice", "mouth")
    with pytest.raises(ValueError, match="source must be one of"):
        await server.resume_media("alice", "mouth")
    with pytest.raises(ValueError, match=r"mode must be one of \['no_packets', 'no_frames'\], not 'silent'"):
        await server.stall_media("alice", "microphone", mode="silent")
    for source in ("microphone", None):
        with pytest.raises(ValueError, match="'no_frames' freezes a video track: source must be 'camera'"):
            await server.stall_media("alice", source, mode="no_frames")
    await server.resume_media("alice", "camera")  # nothing stalled: nothing to do
