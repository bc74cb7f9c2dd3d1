"""Child process of the concurrent-calls benchmark: N calls (rtcstack) or N Rooms (raw) in one fresh process.

Reads one JSON object on stdin: ``url``, ``side`` ("rtcstack" or "raw"), ``warmup`` (a token), ``tokens`` (one per
call), ``idle`` (seconds to sit connected, 0 for none) and ``heap`` (trace the Python heap with tracemalloc).
Writes one JSON object on stdout: each call's connect time, and the process's RSS, Python heap, handles and CPU
time with all N connected, as deltas from a baseline taken after one warm-up connect.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from typing import Any, cast

from livekit import rtc

from rtcstack import Call

from ._common import TimedRoom, timed_call

SETTLE = 2.0
QUIET_WINDOW = 2.0
QUIET_LIMIT = 90.0
_RUNTIME = "tokio-rt-worker"


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _probe() -> dict[str, float]:
    return {
        "rss_kb": _rss_kb(),
        "heap_kb": tracemalloc.get_traced_memory()[0] / 1024 if tracemalloc.is_tracing() else 0.0,
        "tasks": len(asyncio.all_tasks()),
        "threads": len(os.listdir("/proc/self/task")),
        "python_threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
    }


def _runtime_seconds() -> float:
    """CPU seconds used so far by the SDK's Rust runtime threads (``tokio-rt-worker``)."""
    ticks = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")] == _RUNTIME:
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def quiet() -> float:
    """Wait until the SDK's runtime uses under 20% of a core over a window; returns the seconds waited.

    After many concurrent connects it stays busy for a while (~20 s at 100% of a core after 50), rtcstack or not;
    idle figures start after that.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < QUIET_LIMIT:
        used = _runtime_seconds()
        await asyncio.sleep(QUIET_WINDOW)
        if _runtime_seconds() - used < 0.2 * QUIET_WINDOW:
            break
    return time.perf_counter() - start


async def _settle() -> None:
    await asyncio.sleep(SETTLE)
    gc.collect()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    url, side = spec["url"], spec["side"]
    warm = rtc.Room()
    await warm.connect(url, spec["warmup"])
    await warm.disconnect()
    await _settle()
    if spec["heap"]:
        tracemalloc.start()
    before = _probe()
    calls: list[Call] = []
    rooms: list[rtc.Room] = []

    async def connect(token: str) -> tuple[float, float]:
        start = time.perf_counter()
        if side == "rtcstack":
            call = timed_call(url, token)
            calls.append(call)
            await call.connect()
            room = cast(TimedRoom, call.room)
        else:
            room = TimedRoom()
            rooms.append(room)
            await room.connect(url, token)
        elapsed = time.perf_counter() - start
        return elapsed, elapsed - room.connect_s

    try:
        timings = await asyncio.gather(*(connect(token) for token in spec["tokens"]))
        quiet_s = await quiet() if spec["idle"] > 0 else 0.0
        await _settle()
        after = _probe()
        cpu_s = wall_s = 0.0
        if spec["idle"] > 0:
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.sleep(spec["idle"])
            cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall
        connected = sum(call.connection_state == "connected" for call in calls) + sum(
            room.connection_state == rtc.ConnectionState.CONN_CONNECTED for room in rooms
        )
    finally:
        await asyncio.gather(*(call.disconnect() for call in calls), *(room.disconnect() for room in rooms))
    return {
        "connect_s": [total for total, _ in timings],
        "outside_s": [outside for _, outside in timings],
        "delta": {key: after[key] - before[key] for key in before},
        "quiet_s": quiet_s,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "connected": connected,
    }


def main() -> None:
    spec = json.loads(sys.stdin.read())
    json.dump(asyncio.run(run(spec)), sys.stdout)
    sys.stdout.flush()
    os._exit(0)  # skip the interpreter's finalization, where livekit's native threads can abort it (a Rust panic)


if __name__ == "__main__":
    main()
