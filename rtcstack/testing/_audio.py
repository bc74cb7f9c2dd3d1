"""`audio_track`: a local audio track that plays a tone or a WAV file, for the client side of a test.

The samples come from the same reader as the server's synthetic callers (`_synthetic.read_audio`), so
``audio_track("tone:440")`` in a client sounds like ``add_participant(..., audio="tone:440")`` on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from livekit import rtc

from .._errors import ConfigError
from ._synthetic import SyntheticError, read_audio

__all__ = ["audio_track"]

_RATE = 48000
_FRAME = 480
"""Samples per captured frame: 10 ms at 48 kHz."""


@contextlib.asynccontextmanager
async def audio_track(spec: str = "tone:440", *, name: str = "audio") -> AsyncIterator[rtc.LocalAudioTrack]:
    """A `livekit.rtc.LocalAudioTrack` named ``name`` that plays ``spec`` in a loop, in real time, for the block.

    ``spec`` is what `LoopbackServer.add_participant` takes for a synthetic caller: ``"tone:<hz>"`` (a sine wave
    peaking at -12 dBFS) or the path of a 16-bit PCM WAV file (mixed down to mono, resampled to 48 kHz). Publish
    the track with ``call.publish_track(track)``; playing stops when the block ends. Raises `ConfigError` for a spec
    that is neither, before anything starts::

        async with audio_track("tone:440") as track:
            await call.publish_track(track)
            ...
    """
    if not isinstance(spec, str):
        raise ConfigError(f"spec must be 'tone:<hz>' or a WAV file path, not {type(spec).__name__}")
    try:
        samples = read_audio(spec)
    except SyntheticError as exc:
        raise ConfigError(str(exc)) from exc
    source = rtc.AudioSource(_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)

    async def play() -> None:
        frame = rtc.AudioFrame.create(_RATE, 1, _FRAME)
        looped = samples * (1 + _FRAME // len(samples))  # at least one frame long, so a frame wraps at most once
        position = 0
        while True:
            end = position + _FRAME
            chunk = looped[position:end] if end <= len(looped) else looped[position:] + looped[: end - len(looped)]
            frame.data[:] = chunk
            position = end % len(looped)
            await source.capture_frame(frame)  # paced by the source once its queue is full

    player = asyncio.create_task(play(), name=f"audio_track {name}")
    try:
        yield track
    finally:
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await player
        await source.aclose()
