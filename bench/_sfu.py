"""The server as an SFU: its CPU for one publisher and three subscribers, and publish → first frame at a subscriber.

The server runs in a child process (`bench._serve`), so its CPU time (utime + stime from ``/proc``) is its own; the
publisher and the subscribers are real SDK Rooms in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator

from livekit import rtc

from ._common import Bench, Context, log
from ._report import Row, Target
from ._serve import Served, served

__all__ = ["SFU"]

SUBSCRIBERS = 3
WAIT = 20.0
WIDTH, HEIGHT, FPS = 640, 360, 30


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _play_video(source: rtc.VideoSource) -> None:
    data = bytearray(WIDTH * HEIGHT * 4)
    start, count = time.monotonic(), 0
    while True:
        count += 1
        data[: WIDTH * 4 * 8] = bytes([count % 256]) * (WIDTH * 4 * 8)
        source.capture_frame(rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, data))
        await asyncio.sleep(max(0.0, start + count / FPS - time.monotonic()))


async def _play_audio(source: rtc.AudioSource) -> None:
    frame = rtc.AudioFrame.create(48000, 1, 480)
    step = 0
    while True:
        for i in range(480):
            frame.data[i] = int(8000 * math.sin(2 * math.pi * 440 * (step * 480 + i) / 48000))
        step += 1
        await source.capture_frame(frame)


@contextlib.asynccontextmanager
async def _room(server: Served, identity: str, room: str) -> AsyncIterator[rtc.Room]:
    client = rtc.Room()
    await client.connect(server.url, server.token(identity, room))
    try:
        yield client
    finally:
        await client.disconnect()


async def _first_frame(track: rtc.Track) -> None:
    stream = rtc.VideoStream(track)
    try:
        async for _ in stream:
            return
    finally:
        await stream.aclose()


async def _one_room(server: Served, run: int, window: float) -> tuple[float, float | None]:
    """One room: publish, time to the first video frame at a subscriber, then the server's CPU over ``window``."""
    room = f"sfu-{run}"
    async with contextlib.AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(_room(server, "publisher", room))
        subscribers = [await stack.enter_async_context(_room(server, f"sub-{i}", room)) for i in range(SUBSCRIBERS)]
        first: asyncio.Future[rtc.Track] = asyncio.get_running_loop().create_future()

        def on_subscribed(track: rtc.Track, *_: object) -> None:
            if track.kind == rtc.TrackKind.KIND_VIDEO and not first.done():
                first.set_result(track)

        subscribers[0].on("track_subscribed", on_subscribed)
        audio, video = rtc.AudioSource(48000, 1), rtc.VideoSource(WIDTH, HEIGHT)
        stack.push_async_callback(audio.aclose)
        stack.push_async_callback(video.aclose)
        players = [asyncio.create_task(_play_audio(audio)), asyncio.create_task(_play_video(video))]
        try:
            mic = rtc.LocalAudioTrack.create_audio_track("mic", audio)
            cam = rtc.LocalVideoTrack.create_video_track("cam", video)
            await publisher.local_participant.publish_track(mic)
            start = time.perf_counter()
            await publisher.local_participant.publish_track(cam)
            await asyncio.wait_for(_first_frame(await asyncio.wait_for(first, WAIT)), WAIT)
            to_first = (time.perf_counter() - start) * 1000
            if window <= 0:
                return to_first, None
            await asyncio.sleep(2.0)  # past the start: encoders at their rate, subscriptions settled
            cpu, wall = _cpu_seconds(server.pid), time.monotonic()
            await asyncio.sleep(window)
            return to_first, (_cpu_seconds(server.pid) - cpu) / (time.monotonic() - wall) * 100
        finally:
            for player in players:
                player.cancel()
            await asyncio.gather(*players, return_exceptions=True)


async def sfu(ctx: Context) -> list[Row]:
    runs, window = ctx.runs(5, 1), 10.0 if not ctx.quick else 3.0
    first_ms: list[float] = []
    cpu: list[float] = []
    async with served() as server:
        for run in range(runs):
            to_first, load = await _one_room(server, run, window if run < ctx.runs(3, 1) else 0.0)
            first_ms.append(to_first)
            if load is not None:
                cpu.append(load)
            log(f"sfu run {run}: first frame {to_first:.0f} ms" + (f", server CPU {load:.1f}%" if load else ""))
    return [
        Row(
            "server CPU, 1 publisher (Opus + VP8 640x360 30 fps, simulcast) → 3 subscribers",
            "% of a core",
            cpu,
            raw_note="no raw equivalent",
            target=Target("value", 20.0, strict=True),
            ratio=False,
        ),
        Row("publish_track → first video frame at a subscriber", "ms", first_ms, raw_note="no raw equivalent"),
    ]


SFU = Bench(
    "sfu",
    sfu,
    [
        "**server CPU (SFU)**: a LoopbackServer in its own process; one publisher (a 440 Hz tone and 640x360 video "
        "at 30 fps with the SDK's default options: VP8, simulcast, every layer received, the top one sent) and 3 "
        "subscribers, all real SDK Rooms in the bench process. The server's utime + stime over 10 s, 2 s after the "
        "first frame arrived, in % of one core; 3 rooms, one after the other.",
        "**publish_track → first video frame**: from the call of `publish_track` for the camera (the microphone "
        "already published) to the first frame a subscriber's `VideoStream` yields; 5 rooms.",
    ],
    loopback_only="it measures LoopbackServer's own CPU as an SFU.",
)
