"""Child process of the media-health benchmark: the watch's CPU, or the CPU per frame of one audio stream.

Reads one JSON object on stdin, writes one on stdout:

- ``{"mode": "watch", "url", "calls": [token...], "peers": [token...], "watch": bool, "idle": s}``: the calls (with
  the default ``media_stall_timeout``, or ``None`` when ``watch`` is false) and the peers (raw Rooms, for a room with
  one call) connect; each publishes 2 video tracks (camera and screen share, 64x64 VP8 at 5 fps, no simulcast) and
  subscribes to the 2 of the other one in its room. Once every call has its 2 subscribed and
  the SDK's runtime is quiet, the process's CPU time over ``idle`` seconds: ``cpu_s``, ``wall_s``, and how many
  ``track_stalled`` the calls emitted meanwhile (``stalled``).
- ``{"mode": "stream", "url", "token", "side": "rtcstack" | "unwatched" | "raw", "seconds": s}``: read the audio of
  "caller" (a synthetic tone) through ``call.audio_stream`` (the call's watch on, or off: ``unwatched``) or a raw
  ``rtc.AudioStream`` for 1 s, then for ``seconds``: the
  process's CPU time and the frames read in that time (``cpu_s``, ``frames``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncGenerator
from typing import Any

from livekit import rtc

from rtcstack import Call, CallOptions, create_call

from ._common import wait_until
from ._worker import quiet

RATE = 48000
SOURCES = (rtc.TrackSource.SOURCE_CAMERA, rtc.TrackSource.SOURCE_SCREENSHARE)
SIDE = 64
FPS = 5
"""Small pictures at a low rate: 50 calls' media then fits in the machine, and each track has packets and frames
in every sample of the watch (a sample per 0.5 s at the default timeout)."""
WAIT = 60.0


async def _publish(participant: rtc.LocalParticipant | Call, sources: list[rtc.VideoSource]) -> None:
    for source in SOURCES:
        video = rtc.VideoSource(SIDE, SIDE)
        track = rtc.LocalVideoTrack.create_video_track(f"video-{source}", video)
        await participant.publish_track(track, rtc.TrackPublishOptions(source=source, simulcast=False))
        sources.append(video)


async def _feed(sources: list[rtc.VideoSource]) -> None:
    frame = rtc.VideoFrame(SIDE, SIDE, rtc.VideoBufferType.RGBA, bytearray(SIDE * SIDE * 4))
    shade = 0
    while True:
        shade = (shade + 16) % 256
        frame.data[::4] = bytes([shade]) * (SIDE * SIDE)  # a new picture each time, so each frame carries a change
        for source in sources:
            source.capture_frame(frame)
        await asyncio.sleep(1 / FPS)


def _subscribed(call: Call) -> int:
    return sum(track.subscribed for participant in call.participants for track in participant.tracks)


async def watch(spec: dict[str, Any]) -> dict[str, Any]:
    options = CallOptions() if spec["watch"] else CallOptions(media_stall_timeout=None)
    calls = [create_call(spec["url"], token, options=options) for token in spec["calls"]]
    peers = [rtc.Room() for _ in spec["peers"]]
    stalled: list[str] = []
    for call in calls:
        call.on("track_stalled", lambda participant, track, reason: stalled.append(track.sid))
    sources: list[rtc.VideoSource] = []
    feeder: asyncio.Task[None] | None = None
    try:
        await asyncio.gather(*(call.connect() for call in calls))
        await asyncio.gather(
            *(peer.connect(spec["url"], token) for peer, token in zip(peers, spec["peers"], strict=True))
        )
        for call in calls:
            await _publish(call, sources)
        for peer in peers:
            await _publish(peer.local_participant, sources)
        feeder = asyncio.create_task(_feed(sources))
        await wait_until(lambda: all(_subscribed(call) == 2 for call in calls), WAIT, "every call's 2 subscriptions")
        await quiet()
        stalled.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(spec["idle"])
        cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall
        return {"cpu_s": cpu_s, "wall_s": wall_s, "stalled": len(stalled)}
    finally:
        if feeder is not None:
            feeder.cancel()
        await asyncio.gather(*(call.disconnect() for call in calls), *(peer.disconnect() for peer in peers))


async def _raw_frames(url: str, token: str) -> AsyncGenerator[rtc.AudioFrameEvent, None]:
    room = rtc.Room()
    await room.connect(url, token)
    try:

        def caller_track() -> rtc.Track | None:
            participant = room.remote_participants.get("caller")
            for publication in participant.track_publications.values() if participant else ():
                if publication.track is not None:
                    return publication.track
            return None

        await wait_until(lambda: caller_track() is not None, WAIT, "the caller's track")
        track = caller_track()
        assert track is not None
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()
    finally:
        await room.disconnect()


async def _call_frames(url: str, token: str, watch: bool) -> AsyncGenerator[rtc.AudioFrameEvent, None]:
    options = CallOptions() if watch else CallOptions(media_stall_timeout=None)
    async with create_call(url, token, options=options) as call:
        stream = call.audio_stream("caller", sample_rate=RATE, num_channels=1)
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()


async def stream(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["side"] == "raw":
        frames = _raw_frames(spec["url"], spec["token"])
    else:
        frames = _call_frames(spec["url"], spec["token"], watch=spec["side"] == "rtcstack")
    warm_until = None
    count = 0
    cpu = wall = 0.0
    try:
        async for _ in frames:
            now = time.perf_counter()
            if warm_until is None:
                warm_until = now + 1.0
            elif now >= warm_until and not wall:
                cpu, wall = time.process_time(), now
            elif wall:
                count += 1
                if now - wall >= spec["seconds"]:
                    break
        return {"cpu_s": time.process_time() - cpu, "frames": count}
    finally:
        await frames.aclose()


def main() -> None:
    spec = json.loads(sys.stdin.read())
    json.dump(asyncio.run(watch(spec) if spec["mode"] == "watch" else stream(spec)), sys.stdout)
    sys.stdout.flush()
    os._exit(0)  # skip the interpreter's finalization, where livekit's native threads can abort it (a Rust panic)


if __name__ == "__main__":
    main()
