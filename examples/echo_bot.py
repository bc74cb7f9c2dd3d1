"""An echo bot: hears one participant through `call.audio_stream` and says it back on its own track.

The stream follows the caller and the call publishes its track again after a rejoin, so the echo survives reconnects
with no code for them here.

python examples/echo_bot.py URL TOKEN CALLER
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from livekit import rtc

from rtcstack import Participant, TrackInfo, create_call


async def main(url: str, token: str, caller: str, *, stay: float = 30.0) -> None:
    call = create_call(url, token)
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("echo", source)

    @call.on("track_published")
    def announce(participant: Participant, info: TrackInfo) -> None:
        if participant.is_local:
            print(f"echo track published as {info.sid}")

    async def echo() -> None:
        async for event in call.audio_stream(caller):
            await source.capture_frame(event.frame)
        print(f"stopped echoing {caller}")

    async with call:
        await call.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        echoing = asyncio.create_task(echo())
        with contextlib.suppress(TimeoutError):
            await call.wait_for("disconnected", timeout=stay)
    await echoing  # the stream ends with the call
    await source.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
