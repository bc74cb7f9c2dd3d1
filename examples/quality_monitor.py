"""A quality monitor: print each participant's link quality as it changes, local participant included.

python examples/quality_monitor.py URL TOKEN
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from rtcstack import Participant, QualityName, create_call

ICONS: dict[QualityName, str] = {"excellent": "●●●", "good": "●●○", "poor": "●○○", "lost": "○○○", "unknown": "···"}


async def main(url: str, token: str, *, stay: float = 30.0) -> None:
    call = create_call(url, token)

    @call.on("connection_quality_changed")
    def changed(participant: Participant, quality: QualityName) -> None:
        who = f"{participant.identity} (you)" if participant.is_local else participant.identity
        print(f"{ICONS[quality]} {who}: {quality}")

    async with call:
        with contextlib.suppress(TimeoutError):
            await call.wait_for("disconnected", timeout=stay)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
