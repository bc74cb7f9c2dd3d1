"""Leak check: connect/disconnect cycles, then connects cancelled or timed out at random points, on a LoopbackServer.

`python -m bench.leaks [--cycles 200] [--cancels 50] [--seed 1]`, or `scripts/leaks` (which runs it inside a private
network namespace: libwebrtc ignores ``lo``). It counts asyncio tasks, Python threads, native threads, open file
descriptors and livekit FFI handles once after a warm-up cycle (the baseline, once they hold still) and again after
the run, once the server has seen every client leave; it prints both and exits 1 if any figure grew or the baseline
never settled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import astuple, dataclass, fields

from livekit.rtc import _ffi_client  # _live_handles: the SDK's weak set of every FfiHandle object alive

from rtcstack import Call, ConnectTimeoutError, create_call
from rtcstack.testing import LoopbackServer

__all__ = ["Report", "Resources", "main", "measure", "quiet", "run", "settle"]

ROOM = "leaks"


@dataclass(frozen=True)
class Resources:
    """What one process holds: asyncio tasks (the caller's excluded), threads Python started (a native thread that
    once ran Python code stays listed as a ``_DummyThread`` forever, so those are counted with the native threads
    only), native threads, open fds, FFI handles."""

    tasks: int
    threads: int
    native_threads: int
    fds: int
    ffi_handles: int

    def grew(self, baseline: Resources) -> list[str]:
        """The names of the figures that are above ``baseline``."""
        return [f.name for f in fields(self) if getattr(self, f.name) > getattr(baseline, f.name)]


def measure() -> Resources:
    """The figures now, after a full garbage collection (an FfiHandle is released when its object dies)."""
    gc.collect()
    current = asyncio.current_task()
    return Resources(
        tasks=sum(1 for task in asyncio.all_tasks() if task is not current),
        threads=sum(1 for thread in threading.enumerate() if type(thread).__name__ != "_DummyThread"),
        native_threads=len(os.listdir("/proc/self/task")),
        fds=len(os.listdir("/proc/self/fd")),
        ffi_handles=len(_ffi_client._live_handles),
    )


@dataclass(frozen=True)
class Report:
    """Baseline and final figures of one run, and what was done in between."""

    baseline: Resources
    after: Resources
    cycles: int
    cancels: int
    baseline_settled: bool = True
    """False when the figures never held still before the run: then no comparison with them is to be trusted."""

    @property
    def grew(self) -> list[str]:
        return self.after.grew(self.baseline)

    @property
    def problems(self) -> list[str]:
        """What fails the check: the figures that grew, and a baseline that never settled."""
        unsettled = [] if self.baseline_settled else ["the baseline never settled"]
        return unsettled + [f"{name} grew" for name in self.grew]


async def _cycle(server: LoopbackServer, call: Call | None, identity: str) -> None:
    """Connect and disconnect ``call`` (a fresh one if None: then it is dropped after)."""
    if call is None:
        call = create_call(server.url, server.token(identity, room=ROOM))
    await call.connect()
    await call.disconnect()


async def _interrupted(
    server: LoopbackServer, black_hole: str, identity: str, rng: random.Random, *, flavour: str | None = None
) -> Call | None:
    """One connect interrupted at a random point: cancelled, given a tiny deadline, or given a deadline against a
    server that never answers the signal upgrade. Half of them are then disconnected, half just dropped (a call
    that connected first is always disconnected). Returns a black-hole call that is to be disconnected: the
    SDK's own attempts there take ~13 s, so the caller disconnects those together at the end."""
    delay = rng.uniform(0.0, 0.15)
    flavour = flavour or rng.choice(("cancel", "deadline", "black_hole"))
    disconnect = rng.random() < 0.5
    call = create_call(black_hole if flavour == "black_hole" else server.url, server.token(identity, room=ROOM))
    if flavour == "cancel":
        task = asyncio.ensure_future(call.connect())
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    else:
        with contextlib.suppress(ConnectTimeoutError):
            await call.connect(timeout=max(delay, 0.001))
    if disconnect or call.connection_state == "connected":
        if flavour == "black_hole":
            return call
        await call.disconnect()
    return None


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[str]:
    """A ``ws://`` URL on 127.0.0.1 that accepts connections and never answers (a hung signal upgrade)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def quiet(server: LoopbackServer, timeout: float, steady: int = 10) -> tuple[Resources, bool]:
    """The figures once nobody is left on the server and ``steady`` polls in a row (0.1 s apart) agree: the
    baseline, with nothing of the warm-up still closing. At ``timeout`` s the last figures, and False: a baseline
    that never settled (compared against, it could hide a leak or show one that is not there)."""
    deadline = time.monotonic() + timeout
    last, same = measure(), 0
    while same < steady:
        if time.monotonic() >= deadline:
            return last, False
        await asyncio.sleep(0.1)
        now = measure()
        same = same + 1 if now == last and not server.participants(ROOM) else 0
        last = now
    return last, True


async def settle(server: LoopbackServer, baseline: Resources, timeout: float) -> Resources:
    """Poll until nobody is left on the server and no figure is above ``baseline``, for at most ``timeout`` s;
    returns the last figures (the caller compares them)."""
    deadline = time.monotonic() + timeout
    while True:
        now = measure()
        if (not server.participants(ROOM) and not now.grew(baseline)) or time.monotonic() >= deadline:
            return now
        await asyncio.sleep(0.1)


async def run(
    server: LoopbackServer,
    *,
    cycles: int,
    cancels: int,
    seed: int,
    settle_timeout: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Warm up, measure, run ``cycles`` connect/disconnect cycles and ``cancels`` interrupted connects, settle.

    Every other cycle reuses one long-lived Call (it keeps its last Room, as ``call.room``), the others make a
    fresh Call and drop it; the warm-up does both, so the baseline includes the long-lived Call's Room.
    """
    rng = random.Random(seed)
    kept = create_call(server.url, server.token("kept", room=ROOM))
    async with black_hole() as hole:
        await _cycle(server, kept, "kept")
        await _cycle(server, None, "warmup")
        await _interrupted(server, hole, "warmup-interrupted", random.Random(seed), flavour="cancel")
        baseline, settled = await quiet(server, settle_timeout)
        for i in range(cycles):
            await _cycle(server, kept if i % 2 else None, f"cycle-{i % 4}")
            if progress is not None and (i + 1) % 50 == 0:
                progress(f"{i + 1} cycles")
        later = [await _interrupted(server, hole, f"cancel-{i % 4}", rng) for i in range(cancels)]
        await asyncio.gather(*(call.disconnect() for call in later if call is not None))
        after = await settle(server, baseline, settle_timeout)
    return Report(
        baseline=baseline,
        after=after,
        cycles=cycles,
        cancels=cancels,
        baseline_settled=settled,
    )


def render(report: Report) -> str:
    names = [f.name for f in fields(Resources)]
    lines = [
        f"{report.cycles} connect/disconnect cycles, {report.cancels} connects cancelled or timed out",
        f"{'':10}" + "".join(f"{name:>16}" for name in names),
        f"{'baseline':10}" + "".join(f"{value:>16}" for value in astuple(report.baseline)),
        f"{'after':10}" + "".join(f"{value:>16}" for value in astuple(report.after)),
        "no growth" if not report.grew else f"GREW: {', '.join(report.grew)}",
        *([] if report.baseline_settled else ["FAILED: the baseline never settled (figures still moving)"]),
    ]
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> Report:
    async with LoopbackServer(ping_interval=1, ping_timeout=15, departure_timeout=5.0) as server:
        return await run(
            server,
            cycles=args.cycles,
            cancels=args.cancels,
            seed=args.seed,
            progress=lambda text: print(text, file=sys.stderr, flush=True),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.leaks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=200, help="connect/disconnect cycles (default 200)")
    parser.add_argument("--cancels", type=int, default=50, help="interrupted connects (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the cancellation points (default 1)")
    args = parser.parse_args(argv)
    report = asyncio.run(_main(args))
    print(render(report))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
