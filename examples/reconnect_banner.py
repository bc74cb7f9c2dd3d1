"""A reconnect banner: show the call's state as a person would see it, attempt number included.

python examples/reconnect_banner.py URL TOKEN
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from rtcstack import DisconnectReason, create_call


async def main(url: str, token: str, *, stay: float = 30.0) -> None:
    call = create_call(url, token)

    @call.on("reconnecting")
    def banner(attempt: int) -> None:
        print(f"[!] connection lost, reconnecting (attempt {attempt})...")

    @call.on("reconnected")
    def back() -> None:
        print("[ok] back online")

    @call.on("disconnected")
    def ended(reason: DisconnectReason) -> None:
        print(f"[x] call ended: {reason}")

    async with call:
        print(f"connected to {call.local_participant and call.local_participant.identity}")
        with contextlib.suppress(TimeoutError):
            await call.wait_for("disconnected", timeout=stay)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
