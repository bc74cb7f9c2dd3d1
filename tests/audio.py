"""Audio helpers shared by the integration tests: a local track playing a tone, and the level of received frames."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

from livekit import rtc


@contextlib.asynccontextmanager
async def tone(name: str = "mic", amplitude: int = 8000) -> AsyncIterator[rtc.LocalAudioTrack]:
    """A local track playing a 440 Hz tone of `amplitude` (its level is ~0.71 of it; 10 ms frames at 48 kHz, paced
    by the source) for the block."""
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)

    async def play() -> None:
        frame = rtc.AudioFrame.create(48000, 1, 480)
        samples = frame.data
        step = 0
        while True:
            for i in range(480):
                samples[i] = int(amplitude * math.sin(2 * math.pi * 440 * (step * 480 + i) / 48000))
            step += 1
            await source.capture_frame(frame)

    player = asyncio.create_task(play())
    try:
        yield track
    finally:
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await player
        await source.aclose()


def level(frames: list[rtc.AudioFrame]) -> float:
    """RMS of the frames' samples (0..32767)."""
    samples = [s for f in frames for s in f.data]
    return math.sqrt(sum(s * s for s in samples) / len(samples))
