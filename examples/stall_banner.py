"""A media banner: "Bob's audio is interrupted" while a track's media has stopped, cleared when it flows again.

python examples/stall_banner.py URL TOKEN
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from rtcstack import Participant, StallReason, TrackInfo, create_call


async def main(url: str, token: str, *, stay: float = 30.0) -> None:
    call = create_call(url, token)

    @call.on("track_stalled")
    def interrupted(participant: Participant, track: TrackInfo, reason: StallReason) -> None:
        print(f"[!] {participant.name or participant.identity}'s {track.kind} is interrupted ({reason})")

    @call.on("track_resumed")
    def back(participant: Participant, track: TrackInfo, stalled_for: float) -> None:
        print(f"[ok] {participant.name or participant.identity}'s {track.kind} is back after {stalled_for:.1f} s")

    @call.on("media_restored")
    def restored(after: float) -> None:
        print(f"[ok] every track flows again, {after:.1f} s after the connection dropped")

    async with call:
        others = ", ".join(p.name or p.identity for p in call.participants) or "nobody yet"
        print(f"connected, watching the media of {others}")
        with contextlib.suppress(TimeoutError):
            await call.wait_for("disconnected", timeout=stay)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
