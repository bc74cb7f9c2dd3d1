"""What every benchmark shares: the run context, progress lines, A/B order and small statistics."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit import rtc

from rtcstack import Call, CallOptions
from rtcstack._room import normalize_url
from rtcstack._tokens import decode_token

from ._report import Row

__all__ = ["Bench", "Context", "TimedRoom", "log", "order", "percentile", "timed_call", "wait_until"]

SIDES = ("rtcstack", "raw")


@dataclass(frozen=True)
class Context:
    """How much to measure (``quick``: a few runs of everything, a smoke test, not figures to quote), and against
    which server (``loopback`` or ``livekit``, see `bench._serve`)."""

    quick: bool
    server: str = "loopback"
    remarks: list[str] = field(default_factory=list)
    """What went wrong or was unusual in this run, for the notes under the table."""

    def runs(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass(frozen=True)
class Bench:
    """One named benchmark (``--only NAME``): its rows, and a note per figure on what it measures."""

    name: str
    run: Callable[[Context], Awaitable[list[Row]]]
    notes: Sequence[str]
    livekit_notes: Sequence[str] = ()
    """The notes in place of `notes` under ``--server livekit``, where they differ."""
    loopback_only: str = ""
    """Why it runs against LoopbackServer only (skipped under ``--server livekit``, with this in the notes)."""

    def notes_for(self, server: str) -> Sequence[str]:
        if server == "livekit":
            if self.loopback_only:
                return [f"**{self.name}** (skipped: LoopbackServer only): {self.loopback_only}"]
            return self.livekit_notes or self.notes
        return self.notes


ROOT = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 300.0


async def run_worker(module: str, spec: dict[str, Any]) -> tuple[int | None, bytes, bytes]:
    """Run ``python -m module`` from the repository's root with `spec` as JSON on its stdin; its exit status, stdout
    and stderr (within ``WORKER_TIMEOUT``)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(json.dumps(spec).encode()), WORKER_TIMEOUT)
    return child.returncode, out, err


def log(message: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def order(run: int) -> tuple[str, str]:
    """Which side goes first in run ``run``: they alternate, so drift in the machine falls on both alike."""
    return SIDES if run % 2 == 0 else (SIDES[1], SIDES[0])


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0-100) by the nearest-rank method."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 10 ms (state on the SDK side has no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class TimedRoom(rtc.Room):
    """A Room that keeps how long its last ``connect()`` took: the SDK's part of a call's connect."""

    connect_s = 0.0

    async def connect(self, url: str, token: str, options: rtc.RoomOptions | None = None) -> None:
        start = time.perf_counter()
        try:
            await super().connect(url, token, options or rtc.RoomOptions())
        finally:
            self.connect_s = time.perf_counter() - start


def timed_call(url: str, token: str) -> Call:
    """What ``create_call(url, token)`` makes, over `TimedRoom` (through the constructor the unit tests use)."""
    return Call(
        normalize_url(url),
        token,
        decode_token(token),
        token_refresher=None,
        options=CallOptions(),
        _room_factory=TimedRoom,
    )
