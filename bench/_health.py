"""Media health: the watch's CPU (on against off, same run), a real stall to `track_stalled`, and the CPU per frame
of `call.audio_stream` against a raw `rtc.AudioStream`.

The CPU figures come from child processes (`bench._health_worker`), so the server's work is not in them; the stall
is timed in this process against LoopbackServer's `stall_media`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from rtcstack import CallOptions, create_call
from rtcstack._health import SAMPLES_PER_TIMEOUT
from rtcstack.testing import LoopbackServer

from ._common import Bench, Context, log, order, run_worker, wait_until
from ._report import Row, Target

__all__ = ["HEALTH"]

WAIT = 30.0


def _default_timeout() -> float:
    timeout = CallOptions().media_stall_timeout
    assert timeout is not None, "the watch is on by default"
    return timeout


TIMEOUT = _default_timeout()
SIZES = (1, 50)
QUICK_SIZES = (1, 2)
STALLS = 10
STREAM_SECONDS = 10.0
ON, OFF = "rtcstack", "raw"
"""The watch on (the default timeout) and off (``media_stall_timeout=None``), in the table's two columns."""


async def _child(spec: dict[str, Any]) -> dict[str, Any]:
    returncode, out, err = await run_worker("bench._health_worker", spec)
    if returncode != 0 or not out.strip():
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"the {spec['mode']} worker exited {returncode}: {' | '.join(tail)}")
    result: dict[str, Any] = json.loads(out)
    return result


async def _watch_run(ctx: Context, server: LoopbackServer, size: int, side: str, tag: str) -> dict[str, Any]:
    """``size`` calls, two to a room (a raw Room makes the pair of a call left alone)."""
    calls = [server.token(f"call-{i}", room=f"{tag}-{i // 2}") for i in range(size)]
    peers = [server.token("peer", room=f"{tag}-{size // 2}")] if size % 2 else []
    idle = 5.0 if ctx.quick else 30.0
    spec = {"mode": "watch", "url": server.url, "calls": calls, "peers": peers, "watch": side == ON, "idle": idle}
    result = await _child(spec)
    await wait_until(lambda: not server.rooms(), WAIT, "the server's rooms to empty")
    if result["stalled"]:
        ctx.remarks.append(f"health: {size} calls, watch on: {result['stalled']} track_stalled while idle")
    return result


async def _watch_cpu(ctx: Context, server: LoopbackServer) -> list[Row]:
    rows: list[Row] = []
    for size in QUICK_SIZES if ctx.quick else SIZES:
        cpu: dict[str, list[float]] = {ON: [], OFF: []}
        for run in range(ctx.runs(3, 1)):
            for side in order(run):
                result = await _watch_run(ctx, server, size, side, f"watch-{size}-{side}-{run}")
                cpu[side].append(result["cpu_s"] / result["wall_s"] * 100 / size)
        label = f"{size} call{'s' if size > 1 else ''}, 4 tracks each"
        rows.append(
            Row(
                f"{label}: CPU per call, watch on / off", "% core", cpu[ON], cpu[OFF], target=Target("added", 0.5, True)
            )
        )
        log(f"health: {size} calls, CPU per call: on {cpu[ON]}, off {cpu[OFF]}")
    return rows


async def _stall_latency(ctx: Context, server: LoopbackServer) -> list[Row]:
    await server.add_participant("stall", "caller", audio="tone:440")
    call = create_call(server.url, server.token("alice", room="stall"))
    stalled: list[float] = []
    resumed: list[float] = []
    at: dict[str, asyncio.Future[float]] = {}

    def told(name: str) -> None:
        future = at.get(name)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())

    call.on("track_stalled", lambda participant, track, reason: told("track_stalled"))
    call.on("track_resumed", lambda participant, track, stalled_for: told("track_resumed"))
    interval = TIMEOUT / SAMPLES_PER_TIMEOUT
    try:
        await call.connect()
        stream = call.audio_stream("caller")
        await asyncio.wait_for(anext(aiter(stream)), WAIT)
        await stream.aclose()
        for run in range(ctx.runs(STALLS, 1)):
            await asyncio.sleep(2 * interval + interval * (run % 3) / 3)  # flowing, at a varied phase of the sampler
            loop = asyncio.get_running_loop()
            at = {"track_stalled": loop.create_future(), "track_resumed": loop.create_future()}
            await server.stall_media("caller", "microphone")
            start = time.perf_counter()
            stalled.append((await asyncio.wait_for(at["track_stalled"], WAIT) - start) * 1000)
            await server.resume_media("caller", "microphone")
            start = time.perf_counter()
            resumed.append((await asyncio.wait_for(at["track_resumed"], WAIT) - start) * 1000)
    finally:
        await call.disconnect()
        await server.remove_participant("stall", "caller")
    log(f"health: {len(stalled)} stalls")
    goal = Target("value", (TIMEOUT + interval) * 1000)
    return [
        Row("real stall → track_stalled", "ms", stalled, raw_note="no such event", target=goal),
        Row("resume → track_resumed", "ms", resumed, raw_note="no such event"),
    ]


async def _stream_cpu(ctx: Context, server: LoopbackServer) -> list[Row]:
    per_frame: dict[str, list[float]] = {"rtcstack": [], "unwatched": [], "raw": []}
    await server.add_participant("stream", "caller", audio="tone:440")
    try:
        for run in range(ctx.runs(5, 1)):
            for side in (*order(run), "unwatched"):
                spec = {
                    "mode": "stream",
                    "url": server.url,
                    "token": server.token(f"reader-{side}-{run}", room="stream"),
                    "side": side,
                    "seconds": 2.0 if ctx.quick else STREAM_SECONDS,
                }
                result = await _child(spec)
                per_frame[side].append(result["cpu_s"] / max(1, result["frames"]) * 1e6)
    finally:
        await server.remove_participant("stream", "caller")
    return [
        Row(
            "CPU per audio frame: call.audio_stream / rtc.AudioStream",
            "µs",
            per_frame["rtcstack"],
            per_frame["raw"],
            target=Target("ratio", 1.05),
        ),
        Row(
            "CPU per audio frame: call.audio_stream, watch off / rtc.AudioStream",
            "µs",
            per_frame["unwatched"],
            per_frame["raw"],
        ),
    ]


async def media_health(ctx: Context) -> list[Row]:
    async with LoopbackServer() as server:
        return [*await _watch_cpu(ctx, server), *await _stall_latency(ctx, server), *await _stream_cpu(ctx, server)]


HEALTH = Bench(
    "health",
    media_health,
    [
        "**CPU per call, watch on / off**: N calls in a fresh child process, two to a room (a raw Room pairs a call "
        "left alone), each publishing 2 video tracks (camera and screen share: 64x64 VP8 at 5 fps, no simulcast) "
        "and subscribed to the 2 of the other: 4 watched tracks per call, each with packets and frames in every "
        "sample. Once every call has its 2 subscriptions and the SDK's runtime is quiet, the process's CPU time over "
        "30 s, in % of one core per call (for 1 call, its raw Room peer's work is in it too); the rtcstack column "
        f"with the watch on (`media_stall_timeout={TIMEOUT:g}`, a sample every {TIMEOUT / SAMPLES_PER_TIMEOUT:.2g} "
        "s: one `get_rtc_stats()` per Room), the raw column the same calls with `media_stall_timeout=None` (no stats "
        "read); Δ is the watch's cost per call. 3 runs each, alternating; the server runs in the parent process. "
        "Small pictures at a low rate keep 50 calls' media within the machine's 2 cores; the watch's work (a stats "
        "read and its parse per Room) does not depend on the media's rate.",
        "**real stall → track_stalled**: a call follows a synthetic caller's tone (default `media_stall_timeout`); "
        '`server.stall_media("caller", "microphone")` stops forwarding it; the time until the call\'s '
        "`track_stalled` handler runs, then from `resume_media` to `track_resumed`. The target is the timeout plus "
        f"one sample; {STALLS} stalls in one call, each after a varied part of a sample interval of flow.",
        "**CPU per audio frame**: a fresh child process reads a synthetic caller's tone (10 ms frames at 48 kHz) "
        'through `call.audio_stream("caller")` (a call with the default options, so its watch samples too; and '
        "again with `media_stall_timeout=None`, 'watch off') or a raw `rtc.AudioStream` on the subscribed track, 1 s "
        f"of warm-up then {STREAM_SECONDS:g} s: the process's CPU time over the frames read. 5 runs each, the call "
        "and the raw stream alternating, the call without its watch after each pair.",
    ],
    loopback_only="it stalls media with LoopbackServer's `stall_media` and waits on its `rooms()` between runs.",
)
