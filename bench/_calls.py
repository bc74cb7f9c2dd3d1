"""1, 10 and 50 concurrent calls in one process: connect time, memory, idle CPU and handles, rtcstack against raw.

Each run is a fresh child process (`bench._worker`), so memory is measured from a clean baseline; the server runs
in this process. Each call is alone in its own room.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from rtcstack.testing import LoopbackServer

from ._common import Bench, Context, log, order, percentile, run_worker, wait_until
from ._report import Row, Target

__all__ = ["CALLS"]

SIZES = (1, 10, 50)
TRIES = 3


class WorkerCrashed(RuntimeError):
    """A worker died before it reported."""


async def _measured(
    ctx: Context, server: LoopbackServer, side: str, size: int, tag: str, idle: float, heap: bool
) -> dict[str, Any]:
    """`_worker`, run again (with new identities) when it died before reporting, up to `TRIES` times. A worker
    that did not exit cleanly is told in the notes (the SDK has been seen to abort with a Rust panic)."""
    for attempt in range(TRIES):
        try:
            return await _worker(ctx, server, side, size, f"{tag}-{attempt}", idle, heap)
        except WorkerCrashed:
            await wait_until(lambda: not server.rooms(), 60, "the server's rooms to empty")
    raise RuntimeError(f"the {side} worker with {size} calls died {TRIES} times")


async def _worker(
    ctx: Context, server: LoopbackServer, side: str, size: int, tag: str, idle: float, heap: bool
) -> dict[str, Any]:
    spec = {
        "url": server.url,
        "side": side,
        "warmup": server.token(f"warmup-{tag}", room=f"warmup-{tag}"),
        "tokens": [server.token(f"{tag}-{i}", room=f"{tag}-{i}") for i in range(size)],
        "idle": idle,
        "heap": heap,
    }
    returncode, out, err = await run_worker("bench._worker", spec)
    if returncode != 0:
        panic = next((line for line in err.decode(errors="replace").splitlines() if "panicked" in line), "")
        what = f"{side}, {size} calls: the worker exited {returncode}" + (f" ({panic.strip()})" if panic else "")
        what += " after reporting" if out.strip() else " before reporting; run again"
        ctx.remarks.append(what)
        log(f"calls: {what}")
        if not out.strip():
            raise WorkerCrashed(what)
    result: dict[str, Any] = json.loads(out)
    if result["connected"] != size:
        raise RuntimeError(f"worker ({side}, {size} calls): only {result['connected']} stayed connected")
    await wait_until(lambda: not server.rooms(), 30, "the server's rooms to empty")
    return result


def _per_call(results: list[dict[str, Any]], key: str, size: int) -> list[float]:
    return [r["delta"][key] / size for r in results]


def _rows(size: int, runs: dict[str, list[dict[str, Any]]], heaps: dict[str, list[dict[str, Any]]]) -> list[Row]:
    a, b = runs["rtcstack"], runs["raw"]
    label = f"{size} call{'s' if size > 1 else ''}"

    def connect(q: float, key: str = "connect_s") -> tuple[list[float], list[float]]:
        return ([percentile(r[key], q) * 1000 for r in a], [percentile(r[key], q) * 1000 for r in b])

    def cpu(results: list[dict[str, Any]], per: int) -> list[float]:
        return [r["cpu_s"] / r["wall_s"] * 100 / per for r in results]

    rows = [
        Row(f"{label}: connect p50", "ms", *connect(50)),
        Row(f"{label}: connect p95", "ms", *connect(95)),
        Row(f"{label}: connect, time outside Room.connect() p95", "ms", *connect(95, "outside_s"), ratio=False),
        Row(f"{label}: SDK runtime busy after the connects", "s", [r["quiet_s"] for r in a], [r["quiet_s"] for r in b]),
        Row(f"{label}: RSS per call", "KB", _per_call(a, "rss_kb", size), _per_call(b, "rss_kb", size)),
        Row(
            f"{label}: Python heap per call",
            "KB",
            _per_call(heaps["rtcstack"], "heap_kb", size),
            _per_call(heaps["raw"], "heap_kb", size),
            target=Target("added", 100),
        ),
        Row(f"{label}: idle CPU per call", "% core", cpu(a, size), cpu(b, size)),
    ]
    if size == SIZES[-1]:
        rows.append(Row(f"{label}: idle CPU in total", "% core", cpu(a, 1), cpu(b, 1), target=Target("added", 2, True)))
    rows += [
        Row(f"{label}: asyncio tasks per call", "count", _per_call(a, "tasks", size), _per_call(b, "tasks", size)),
        Row(f"{label}: threads per call", "count", _per_call(a, "threads", size), _per_call(b, "threads", size)),
        Row(f"{label}: fds per call", "count", _per_call(a, "fds", size), _per_call(b, "fds", size)),
    ]
    return rows


async def concurrent_calls(ctx: Context) -> list[Row]:
    runs, idle = ctx.runs(3, 1), 10.0 if ctx.quick else 30.0
    rows: list[Row] = []
    async with LoopbackServer() as server:
        for size in SIZES:
            results: dict[str, list[dict[str, Any]]] = {"rtcstack": [], "raw": []}
            heaps: dict[str, list[dict[str, Any]]] = {"rtcstack": [], "raw": []}
            for run in range(runs):
                for side in order(run):
                    tag = f"{side}-{size}-{run}"
                    results[side].append(await _measured(ctx, server, side, size, tag, idle, heap=False))
                    heaps[side].append(await _measured(ctx, server, side, size, f"{tag}-heap", 0.0, heap=True))
            rows += _rows(size, results, heaps)
            medians = {side: statistics.median(r["cpu_s"] for r in results[side]) for side in results}
            log(f"calls: {size} concurrent, {runs} runs each (idle CPU s: {medians})")
    return rows


CALLS = Bench(
    "calls",
    concurrent_calls,
    [
        "**N calls**: N calls (or raw Rooms) connect at once in a fresh child process, each alone in its room, after "
        "one warm-up connect there; connect p50/p95 and the time outside `Room.connect()` are per run. Then the "
        "process waits until the SDK's Rust runtime (its `tokio-rt-worker` threads) uses under 20% of a core over "
        "2 s ('SDK runtime busy', 2 s steps), and 2 s more. Memory and handles are the change from before the "
        "connects, per call (RSS from /proc; the Python heap from tracemalloc, in separate runs so that tracing "
        "slows nothing else; threads are native threads). Idle CPU is the process's CPU time over the next 30 s, "
        "connected and doing nothing, in % of one core; 'in total' is for all N. 3 runs each, alternating; the "
        "server runs in the parent process.",
    ],
    loopback_only=(
        "memory, CPU and handles of the client process; it waits on LoopbackServer's `rooms()` between runs."
    ),
)
