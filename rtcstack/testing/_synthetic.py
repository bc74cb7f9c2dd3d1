"""Synthetic media for a participant with no client: a tone or a WAV file as Opus, a moving pattern as VP8.

Each source is encoded once, on the server, with PyAV (the encoders aiortc itself uses), in real time; the encoded
frames go into a `Source` like a client's would, so every subscriber gets them through the same forwarding path.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import itertools
import logging
import math
import time
import wave
from pathlib import Path
from typing import Any

import av

from ._forward import Source

__all__ = ["SyntheticError", "pattern", "play_audio", "play_video", "read_audio"]

logger = logging.getLogger("rtcstack.testing")

_RATE = 48000
_SAMPLES = 960
"""Samples per 20 ms Opus frame at 48 kHz."""
_FPS = 15
_WIDTH, _HEIGHT = 320, 180
_BAR = 16
"""Width of the pattern's bar in pixels."""


class SyntheticError(ValueError):
    """A synthetic media spec that is neither ``tone:<hz>`` nor a readable 16-bit PCM WAV file."""


def read_audio(spec: str) -> array.array[int]:
    """One second of a ``tone:<hz>`` (at -12 dBFS) or a whole WAV file, as mono 48 kHz 16-bit samples."""
    if spec.startswith("tone:"):
        try:
            hz = float(spec[5:])
        except ValueError:
            raise SyntheticError(f"bad tone {spec!r}: expected tone:<frequency in Hz>") from None
        if not 0 < hz < _RATE / 2:
            raise SyntheticError(f"bad tone {spec!r}: the frequency must be between 0 and {_RATE // 2} Hz")
        return array.array("h", (int(0.25 * 32767 * math.sin(2 * math.pi * hz * i / _RATE)) for i in range(_RATE)))
    try:
        with wave.open(str(Path(spec)), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise SyntheticError(f"{spec}: only 16-bit PCM WAV files are supported")
            rate, channels = wav.getframerate(), wav.getnchannels()
            pcm = array.array("h", wav.readframes(wav.getnframes()))
    except (OSError, wave.Error, EOFError) as exc:
        raise SyntheticError(f"cannot read {spec!r} as a WAV file: {exc}") from exc
    mono = [sum(pcm[i : i + channels]) // channels for i in range(0, len(pcm) - channels + 1, channels)]
    if not mono:
        raise SyntheticError(f"{spec}: the file has no audio")
    step = rate / _RATE
    return array.array("h", (mono[int(i * step)] for i in range(int(len(mono) / step))))


async def play_audio(source: Source, samples: array.array[int]) -> None:
    """Encode ``samples`` to Opus in a loop, paced in real time, into ``source`` until it closes."""
    encoder: Any = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = _RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.time_base = fractions.Fraction(1, _RATE)
    looped = itertools.cycle(samples)
    start, pts = time.monotonic(), 0
    while not source.closed:
        chunk = array.array("h", itertools.islice(looped, _SAMPLES))
        frame = av.AudioFrame(format="s16", layout="mono", samples=_SAMPLES)
        frame.planes[0].update(chunk.tobytes())
        frame.sample_rate, frame.pts, frame.time_base = _RATE, pts, fractions.Fraction(1, _RATE)
        for packet in encoder.encode(frame):
            source.count_packet()
            source.deliver("audio/opus", _RATE, bytes(packet), int(packet.pts if packet.pts is not None else pts))
        source.deliver_level(math.sqrt(sum(s * s for s in chunk) / _SAMPLES) / 32768)
        pts += _SAMPLES
        await asyncio.sleep(max(0.0, start + pts / _RATE - time.monotonic()))


def pattern(count: int, line_size: int) -> bytes:
    """The luma plane of frame ``count``: a bright bar on a dark field, moving right and wrapping at the edge."""
    x = (count * 8) % (_WIDTH - _BAR)
    row = bytearray([40]) * line_size
    row[x : x + _BAR] = bytes([220]) * _BAR
    return bytes(row) * _HEIGHT


async def play_video(source: Source) -> None:
    """Encode a moving bar pattern to VP8 at 15 fps into ``source`` until it closes; keyframes on request."""
    encoder: Any = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = _WIDTH, _HEIGHT, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90000)
    encoder.bit_rate = 300_000
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    wanted = [True]
    source.keyframe_requester = lambda: wanted.__setitem__(0, True)
    start, count = time.monotonic(), 0
    while not source.closed:
        frame = av.VideoFrame(_WIDTH, _HEIGHT, "yuv420p")
        luma, *chroma = frame.planes
        luma.update(pattern(count, luma.line_size))
        for plane in chroma:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts, frame.time_base = count * 90000 // _FPS, fractions.Fraction(1, 90000)
        if wanted[0]:
            frame.pict_type = av.video.frame.PictureType.I
            wanted[0] = False
        for packet in encoder.encode(frame):
            source.count_packet()
            source.deliver("video/VP8", 90000, bytes(packet), int(packet.pts if packet.pts is not None else frame.pts))
        count += 1
        await asyncio.sleep(max(0.0, start + count / _FPS - time.monotonic()))
