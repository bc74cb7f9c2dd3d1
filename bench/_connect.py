"""Connect latency, and a crowd of clients joining one room until all see each other (rtcstack and raw)."""

from __future__ import annotations

import asyncio
import time
from typing import cast

from livekit import rtc

from rtcstack import Call

from ._common import Bench, Context, TimedRoom, log, order, timed_call
from ._report import Row, Target
from ._serve import Served, served

__all__ = ["CONNECT", "CROWD"]

CROWD_SIZE = 20


async def _connect_once(server: Served, side: str, identity: str) -> tuple[float, float]:
    """Seconds from ``connect()`` to its return on a fresh call or Room (disconnected after), and the part of it
    outside ``Room.connect()``."""
    token = server.token(identity, room="latency")
    if side == "rtcstack":
        call = timed_call(server.url, token)
        start = time.perf_counter()
        await call.connect()
        elapsed = time.perf_counter() - start
        await call.disconnect()
        inner = cast(TimedRoom, call.room).connect_s
    else:
        room = TimedRoom()
        start = time.perf_counter()
        await room.connect(server.url, token)
        elapsed = time.perf_counter() - start
        await room.disconnect()
        inner = room.connect_s
    return elapsed, elapsed - inner


async def connect_latency(ctx: Context) -> list[Row]:
    runs = ctx.runs(20, 5)
    samples: dict[str, list[float]] = {"rtcstack": [], "raw": []}
    own: dict[str, list[float]] = {"rtcstack": [], "raw": []}
    async with served(ctx.server) as server:
        for side in ("rtcstack", "raw", "rtcstack", "raw"):
            await _connect_once(server, side, f"warmup-{side}-{time.monotonic_ns()}")
        for run in range(runs):
            for side in order(run):
                elapsed, outside = await _connect_once(server, side, f"{side}-{run}")
                samples[side].append(elapsed * 1000)
                own[side].append(outside * 1000)
        log(f"connect: {runs} runs each")
    return [
        Row("connect latency", "ms", samples["rtcstack"], samples["raw"], target=Target("ratio", 1.02)),
        Row("connect: time outside Room.connect()", "ms", own["rtcstack"], own["raw"], ratio=False),
    ]


async def _crowd_once(server: Served, side: str, room_name: str, count: int) -> tuple[float, float, float]:
    """``count`` clients join ``room_name`` one after the other (concurrent connects to one room race inside the
    Python SDK: "participant already exists"). Seconds until the last connect returned, until every client saw
    the ``count - 1`` others, and spent in the connects outside ``Room.connect()``."""
    everyone = asyncio.Event()
    calls: list[Call] = []
    rooms: list[rtc.Room] = []

    def sizes() -> list[int]:
        if side == "rtcstack":
            return [len(call.participants) for call in calls]
        return [len(room.remote_participants) for room in rooms]

    def check(*_: object) -> None:
        seen = sizes()
        if len(seen) == count and all(n == count - 1 for n in seen):
            everyone.set()

    outside = 0.0
    start = time.perf_counter()
    try:
        for i in range(count):
            token = server.token(f"peer-{i}", room=room_name)
            began = time.perf_counter()
            if side == "rtcstack":
                call = timed_call(server.url, token)
                call.on("participant_joined", check)
                calls.append(call)
                await call.connect()
                room = cast(TimedRoom, call.room)
            else:
                room = TimedRoom()
                room.on("participant_connected", check)
                await room.connect(server.url, token)
                rooms.append(room)
            outside += time.perf_counter() - began - room.connect_s
        connected = time.perf_counter() - start
        check()
        await asyncio.wait_for(everyone.wait(), timeout=60)
        return connected, time.perf_counter() - start, outside
    finally:
        await asyncio.gather(*(call.disconnect() for call in calls), *(room.disconnect() for room in rooms))


async def crowd(ctx: Context) -> list[Row]:
    runs = ctx.runs(3, 1)
    last: dict[str, list[float]] = {"rtcstack": [], "raw": []}
    seen: dict[str, list[float]] = {"rtcstack": [], "raw": []}
    own: dict[str, list[float]] = {"rtcstack": [], "raw": []}
    async with served() as server:
        for run in range(runs):
            for side in order(run):
                connected, everyone, outside = await _crowd_once(server, side, f"crowd-{side}-{run}", CROWD_SIZE)
                last[side].append(connected * 1000)
                seen[side].append(everyone * 1000)
                own[side].append(outside * 1000)
        log(f"crowd: {runs} runs each")
    return [
        Row(f"{CROWD_SIZE} join one room in turn: last connect() returns", "ms", last["rtcstack"], last["raw"]),
        Row(f"{CROWD_SIZE} in one room: each sees the {CROWD_SIZE - 1} others", "ms", seen["rtcstack"], seen["raw"]),
        Row(
            f"{CROWD_SIZE} join one room: time outside Room.connect(), all {CROWD_SIZE}",
            "ms",
            own["rtcstack"],
            own["raw"],
            ratio=False,
        ),
    ]


CONNECT = Bench(
    "connect",
    connect_latency,
    [
        "**connect latency**: `await call.connect()` against `await Room.connect()`, each on a fresh object and "
        "disconnected after; 20 of each, alternating, after 2 warm-up connects each. The server (livekit-server: "
        "with the signal proxy every connection passes through) runs in another process. **time outside "
        "Room.connect()**: the same connects, paired: the call's `connect()` minus the `Room.connect()` inside it (a "
        "`Room` subclass times it), that is what rtcstack itself adds; unlike the difference of two medians it does "
        "not drown in the SDK's and the machine's noise.",
    ],
)

CROWD = Bench(
    "crowd",
    crowd,
    [
        f"**{CROWD_SIZE} join one room**: {CROWD_SIZE} calls (or Rooms) in one process connect one after the other "
        "(concurrent connects to one room race inside the Python SDK); the time until the last `connect()` "
        "returned, until every one of them lists the others, and the time of the connects outside "
        "`Room.connect()` added up. The server runs in another process; 3 runs each, alternating.",
    ],
    loopback_only="livekit-server sends the joins of participants that publish nothing in batches every 3 s "
    "(`update_interval`), so the figure would measure that interval.",
)
