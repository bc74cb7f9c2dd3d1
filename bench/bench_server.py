"""LoopbackServer benchmark: connect latency of the raw SDK, and N real clients in one room seeing each other.

Run inside the private network namespace (libwebrtc ignores lo):
    RTCSTACK_NETNS= bash -c '. scripts/_bootstrap.sh; run_isolated python bench/bench_server.py'
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from livekit import rtc

from rtcstack.testing import LoopbackServer


async def connect_latency(server: LoopbackServer, runs: int) -> list[float]:
    """Seconds from ``Room.connect`` to its return, one fresh Room per run (each disconnected after)."""
    samples = []
    for i in range(runs):
        room = rtc.Room()
        token = server.token(f"latency-{i}", room="latency")
        start = time.perf_counter()
        await room.connect(server.url, token)
        samples.append(time.perf_counter() - start)
        await room.disconnect()
    return samples


async def all_see_all(server: LoopbackServer, count: int) -> tuple[float, float]:
    """``count`` clients join one room one after the other (concurrent connects race inside the Python SDK:
    "participant already exists"). Returns seconds until the last connect returned, and until every client
    saw the ``count - 1`` others.
    """
    rooms: list[rtc.Room] = []
    everyone = asyncio.Event()

    def check(*_: object) -> None:
        if len(rooms) == count and all(len(room.remote_participants) == count - 1 for room in rooms):
            everyone.set()

    start = time.perf_counter()
    try:
        for i in range(count):
            room = rtc.Room()
            room.on("participant_connected", check)
            await room.connect(server.url, server.token(f"peer-{i}", room="crowd"))
            rooms.append(room)
        connected = time.perf_counter() - start
        check()
        await asyncio.wait_for(everyone.wait(), timeout=60)
        return connected, time.perf_counter() - start
    finally:
        await asyncio.gather(*(room.disconnect() for room in rooms))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="connect latency samples")
    parser.add_argument("--clients", type=int, default=20, help="clients in the crowded room")
    args = parser.parse_args()

    async with LoopbackServer() as server:
        await connect_latency(server, 2)
        samples = await connect_latency(server, args.runs)
        connected, seen = await all_see_all(server, args.clients)

    print(f"{'measure':<44} {'median ms':>9} {'min ms':>8} {'max ms':>8}")
    print(
        f"{f'raw Room.connect, {args.runs} runs':<44} {_ms(statistics.median(samples)):>9} "
        f"{_ms(min(samples))} {_ms(max(samples))}"
    )
    print(f"{f'{args.clients} clients joining in turn: last connect()':<44} {_ms(connected):>9} {'':>8} {'':>8}")
    print(f"{f'{args.clients} clients: each sees the {args.clients - 1} others':<44} {_ms(seen):>9} {'':>8} {'':>8}")


if __name__ == "__main__":
    asyncio.run(main())
