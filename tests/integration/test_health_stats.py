"""What the real SDK's RTC stats give the media-health watch, on both servers.

Measured with livekit 1.2.1: the stats never carry a track's sid. A remote track's inbound-rtp names its receiver's
track id (a UUID libwebrtc makes up, not the msid the server sent) and a local track's outbound-rtp its media
source, whose track id is the local track's; `stats_key` reads that id from ``await track.get_stats()``. With a
single peer connection (the SDK's default) every entry is in ``publisher_stats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest
from livekit import rtc

from rtcstack._health import (
    Counters,
    HealthOutput,
    MediaWatch,
    Sampler,
    TrackResumed,
    TrackStalled,
    counters_from_stats,
    stats_key,
)
from rtcstack._tasks import Tasks
from rtcstack.testing import audio_track
from tests.calls import within
from tests.servers import BOTH

if TYPE_CHECKING:
    from conftest import Connect

pytestmark = pytest.mark.servers(*BOTH)

POLL = 0.1
"""Seconds between two stats reads while waiting for counters to change or to stand still."""


class Camera:
    """A local video track fed 30 frames a second while `feeding` is set."""

    def __init__(self, width: int = 640, height: int = 360) -> None:
        self.width, self.height = width, height
        self.source = rtc.VideoSource(width, height)
        self.track = rtc.LocalVideoTrack.create_video_track("cam", self.source)
        self.feeding = asyncio.Event()
        self.feeding.set()

    async def play(self) -> None:
        data = bytearray(self.width * self.height * 4)
        count = 0
        while True:
            await self.feeding.wait()
            count += 1
            data[: self.width * 4] = bytes([count % 256]) * (self.width * 4)  # a changing line, so frames differ
            self.source.capture_frame(rtc.VideoFrame(self.width, self.height, rtc.VideoBufferType.RGBA, data))
            await asyncio.sleep(1 / 30)


@contextlib.asynccontextmanager
async def publishing(
    room: rtc.Room, width: int = 640, height: int = 360
) -> AsyncIterator[tuple[rtc.LocalTrackPublication, rtc.LocalTrackPublication, Camera]]:
    """``room`` publishes a tone (microphone) and a camera of ``width`` x ``height`` for the block."""
    camera = Camera(width, height)
    player = asyncio.create_task(camera.play())
    try:
        async with audio_track("tone:440") as tone:
            mic = await room.local_participant.publish_track(
                tone, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            )
            cam = await room.local_participant.publish_track(
                camera.track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
            )
            yield mic, cam, camera
    finally:
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await player
        await camera.source.aclose()


async def key_of(track: rtc.Track, what: str) -> str:
    """The track's stats key, once its stats have one (a remote track has none before its first packet)."""

    async def poll() -> str:
        while (key := stats_key(await track.get_stats())) is None:  # noqa: ASYNC110  (stats have no event)
            await asyncio.sleep(POLL)
        return key

    return await within(f"a stats key for {what}", poll())


async def remote_track(room: rtc.Room, identity: str, source: rtc.TrackSource.ValueType) -> rtc.Track:
    """The subscribed track of ``identity``'s ``source`` in ``room``."""

    async def poll() -> rtc.Track:
        while True:
            participant = room.remote_participants.get(identity)
            for publication in participant.track_publications.values() if participant else ():
                if publication.source == source and publication.track is not None:
                    return publication.track
            await asyncio.sleep(POLL)

    return await within(f"{identity}'s track of source {source} subscribed", poll())


async def counters(room: rtc.Room, key: str) -> Counters | None:
    return counters_from_stats(await room.get_rtc_stats()).get(key)


def advanced(before: Counters | None, after: Counters | None) -> bool:
    """Payload advanced, and frames too for video: the watch's rule for "flows"."""
    if before is None or after is None or after.payload <= before.payload:
        return False
    return before.frames is None or (after.frames is not None and after.frames > before.frames)


async def advances(room: rtc.Room, key: str, what: str) -> None:
    """Wait until ``key``'s counters in ``room``'s stats advance from what they are now."""
    first = await counters(room, key)

    async def poll() -> None:
        while not advanced(first, await counters(room, key)):  # noqa: ASYNC110  (stats have no event)
            await asyncio.sleep(POLL)

    await within(f"{what} advancing in the stats", poll())


async def stands_still(room: rtc.Room, key: str, span: float, what: str) -> Counters:
    """Wait until ``key``'s counters in ``room``'s stats stay the same for ``span`` seconds; those counters."""

    async def poll() -> Counters:
        loop = asyncio.get_running_loop()
        last, since = await counters(room, key), loop.time()
        while last is None or loop.time() - since < span:
            await asyncio.sleep(POLL)
            current = await counters(room, key)
            if current != last:
                last, since = current, loop.time()
        return last

    return await within(f"{what} standing still for {span:g} s", poll())


async def test_each_track_has_counters_under_its_key_and_they_advance(connect: Connect) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    async with publishing(alice.room) as (mic, cam, _):
        assert mic.track is not None and cam.track is not None
        local = {"mic": await key_of(mic.track, "alice's mic"), "cam": await key_of(cam.track, "alice's cam")}
        heard = await remote_track(bob.room, "alice", rtc.TrackSource.SOURCE_MICROPHONE)
        seen = await remote_track(bob.room, "alice", rtc.TrackSource.SOURCE_CAMERA)
        remote = {"mic": await key_of(heard, "bob's audio from alice"), "cam": await key_of(seen, "bob's video")}

        assert len({*local.values(), *remote.values()}) == 4
        assert not {mic.sid, cam.sid} & {*local.values(), *remote.values()}  # no sid in the stats
        assert heard.sid == mic.sid and seen.sid == cam.sid

        for room, keys, side in ((alice.room, local, "alice's"), (bob.room, remote, "bob's")):
            found = counters_from_stats(await room.get_rtc_stats())
            assert found[keys["mic"]].frames is None, f"{side} audio counts no frames"
            assert found[keys["cam"]].frames is not None, f"{side} video counts frames"
            for name, key in keys.items():
                await advances(room, key, f"{side} {name}")


def sending_layers(stats: rtc.RtcStats) -> list[Any]:
    """The outbound-rtp entries of the (one) local video track that have sent packets: one per simulcast layer."""
    return [
        e.outbound_rtp
        for e in stats.publisher_stats
        if e.WhichOneof("stats") == "outbound_rtp"
        and e.outbound_rtp.stream.kind == "video"
        and e.outbound_rtp.sent.packets_sent
    ]


@pytest.mark.servers("livekit")  # on LoopbackServer the encoder never starts a layer above the lowest
async def test_local_video_counters_sum_the_simulcast_layers(connect: Connect) -> None:
    alice = await connect("alice")
    async with publishing(alice.room, 1280, 720) as (_, cam, _):
        assert cam.track is not None
        key = await key_of(cam.track, "alice's cam")

        async def layered() -> rtc.RtcStats:
            # the encoder starts a layer as its bandwidth estimate allows
            while len(sending_layers(stats := await alice.room.get_rtc_stats())) < 2:  # noqa: ASYNC110  (no event)
                await asyncio.sleep(POLL)
            return stats

        stats = await within("a second simulcast layer sending", layered())
        layers = sending_layers(stats)
        payload = sum(layer.sent.bytes_sent for layer in layers)
        frames = sum(layer.outbound.frames_encoded for layer in layers)
        assert counters_from_stats(stats)[key] == Counters(payload, frames)


async def test_a_video_source_that_stops_being_fed_stops_advancing(connect: Connect) -> None:
    """When the app stops capturing frames, its video track sends no more media (no frames encoded, no payload: the
    padding libwebrtc goes on sending to probe the bandwidth carries none) and the subscriber receives nothing
    more; the audio published beside it goes on."""
    alice, bob = await connect("alice"), await connect("bob")
    async with publishing(alice.room) as (mic, cam, camera):
        assert mic.track is not None and cam.track is not None
        local = await key_of(cam.track, "alice's cam")
        remote = await key_of(await remote_track(bob.room, "alice", rtc.TrackSource.SOURCE_CAMERA), "bob's video")
        audio = await key_of(await remote_track(bob.room, "alice", rtc.TrackSource.SOURCE_MICROPHONE), "bob's audio")
        await advances(bob.room, remote, "bob's video")

        camera.feeding.clear()
        await stands_still(alice.room, local, 1.0, "alice's cam, no longer fed,")
        await stands_still(bob.room, remote, 1.0, "bob's video from alice's unfed cam")
        await advances(bob.room, audio, "bob's audio from alice")

        camera.feeding.set()
        await advances(alice.room, local, "alice's cam, fed again,")
        await advances(bob.room, remote, "bob's video from alice's cam fed again")


async def test_an_audio_source_that_stops_being_fed_still_sends(connect: Connect) -> None:
    """An `rtc.AudioSource` that gets no more `capture_frame` calls still sends packets (the SDK sends silence; with
    DTX, as livekit-server negotiates, only a few a second): its payload goes on advancing on both sides, so the
    watch cannot see a local audio track the app stopped feeding."""
    alice, bob = await connect("alice"), await connect("bob")
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    frame = rtc.AudioFrame.create(48000, 1, 480)
    for i in range(480):
        frame.data[i] = 8000 if (i // 55) % 2 else -8000  # a square wave: not silence
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await alice.room.local_participant.publish_track(track, options)
    for _ in range(50):  # half a second
        await source.capture_frame(frame)
    await source.wait_for_playout()  # what was captured has gone: from here on the source gets nothing
    local = await key_of(track, "alice's mic")
    remote = await key_of(await remote_track(bob.room, "alice", rtc.TrackSource.SOURCE_MICROPHONE), "bob's audio")
    assert publication.sid != local

    await advances(alice.room, local, "alice's mic, no longer fed,")
    await advances(alice.room, local, "alice's mic, no longer fed, again")
    await advances(bob.room, remote, "bob's audio from alice's unfed mic")
    await source.aclose()


class Watcher:
    """A `MediaWatch` fed by a `Sampler` over ``room``'s stats, for the tracks ``tracks()`` gives; its outputs in
    order."""

    def __init__(self, room: rtc.Room, tracks: Callable[[], dict[str, rtc.Track]], stall_timeout: float) -> None:
        self.watch = MediaWatch(stall_timeout)
        self.outputs: list[HealthOutput] = []
        self.changed = asyncio.Event()
        self.tasks = Tasks("test watcher", logging.getLogger("rtcstack"))
        self.sampler = Sampler(
            room.get_rtc_stats, tracks, self.watch, self.record, self.tasks, interval=stall_timeout / 4
        )

    def record(self, outputs: list[HealthOutput]) -> None:
        self.outputs += outputs
        self.changed.set()

    async def output(self, index: int, what: str) -> HealthOutput:
        """The output number ``index`` (from 0), come or coming."""

        async def wait() -> HealthOutput:
            while len(self.outputs) <= index:
                self.changed.clear()
                await self.changed.wait()
            return self.outputs[index]

        return await within(what, wait())

    async def flowing(self, sid: str, what: str) -> None:
        async def poll() -> None:
            while self.watch.media(sid) != "flowing":  # noqa: ASYNC110  (the watch has no event for a first flow)
                await asyncio.sleep(POLL)

        await within(f"{what} flowing", poll())


def local_tracks(room: rtc.Room) -> dict[str, rtc.Track]:
    return {sid: pub.track for sid, pub in room.local_participant.track_publications.items() if pub.track}


def remote_tracks(room: rtc.Room) -> dict[str, rtc.Track]:
    return {
        sid: pub.track
        for participant in room.remote_participants.values()
        for sid, pub in participant.track_publications.items()
        if pub.track is not None
    }


async def test_the_sampler_sees_an_unfed_camera_stall_and_resume_on_both_sides(connect: Connect) -> None:
    """A publisher stops feeding its camera: its own watch and the subscriber's see that track stall (no payload),
    not the audio beside it, and resume when frames come again."""
    alice, bob = await connect("alice"), await connect("bob")
    async with publishing(alice.room) as (mic, cam, camera):
        await remote_track(bob.room, "alice", rtc.TrackSource.SOURCE_CAMERA)
        await remote_track(bob.room, "alice", rtc.TrackSource.SOURCE_MICROPHONE)
        sender = Watcher(alice.room, lambda: local_tracks(alice.room), stall_timeout=1.0)
        receiver = Watcher(bob.room, lambda: remote_tracks(bob.room), stall_timeout=1.0)
        for watcher in (sender, receiver):
            watcher.watch.watch(mic.sid, "alice", video=False, now=time.monotonic())
            watcher.watch.watch(cam.sid, "alice", video=True, now=time.monotonic())
            watcher.sampler.start()
        try:
            for watcher, side in ((sender, "alice's"), (receiver, "bob's")):
                await watcher.flowing(cam.sid, f"{side} watch: the camera")
                await watcher.flowing(mic.sid, f"{side} watch: the microphone")

            camera.feeding.clear()
            for watcher, side in ((sender, "alice's"), (receiver, "bob's")):
                output = await watcher.output(0, f"{side} watch: the camera stalling")
                assert output == TrackStalled("alice", cam.sid, "no_packets"), side

            camera.feeding.set()
            for watcher, side in ((sender, "alice's"), (receiver, "bob's")):
                output = await watcher.output(1, f"{side} watch: the camera resuming")
                assert isinstance(output, TrackResumed) and output.sid == cam.sid, side
                assert len(watcher.outputs) == 2, f"{side} watch: only the camera stalled and resumed"
        finally:
            for watcher in (sender, receiver):
                await watcher.sampler.stop()
                await watcher.tasks.close()
