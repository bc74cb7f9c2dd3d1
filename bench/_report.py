"""Figures, their targets, and the table (printed, and written to BENCHMARKS.md with the machine and versions)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Literal

from rtcstack.testing._livekit import LiveKitServerError, find_binary

__all__ = ["Row", "Target", "environment", "render", "table"]

PACKAGES = ("livekit", "livekit-api", "livekit-protocol", "aiortc", "rtcstack")


@dataclass(frozen=True)
class Target:
    """A limit on a figure: on rtcstack's median (``value``), on rtcstack / raw (``ratio``) or on rtcstack - raw
    (``added``); ``strict`` means ``<`` rather than ``<=``."""

    kind: Literal["value", "ratio", "added"]
    limit: float
    strict: bool = False

    def describe(self, unit: str) -> str:
        sign = "<" if self.strict else "≤"
        if self.kind == "ratio":
            return f"ratio {sign} {self.limit:g}"
        if self.kind == "added":
            return f"Δ {sign} {self.limit:g} {unit}"
        return f"{sign} {self.limit:g} {unit}"

    def check(self, facade: float, raw: float | None) -> bool | None:
        if self.kind == "value":
            value: float | None = facade
        elif raw is None:
            value = None
        elif self.kind == "ratio":
            value = facade / raw if raw else None
        else:
            value = facade - raw
        if value is None:
            return None
        return value < self.limit if self.strict else value <= self.limit


@dataclass(frozen=True)
class Row:
    """One figure: rtcstack's samples and the raw Room's (``raw_note`` stands in when the raw Room has none;
    ``ratio`` False for figures where only the difference means something)."""

    figure: str
    unit: str
    facade: Sequence[float]
    raw: Sequence[float] = ()
    raw_note: str = ""
    target: Target | None = None
    ratio: bool = True

    @property
    def facade_median(self) -> float:
        return statistics.median(self.facade)

    @property
    def raw_median(self) -> float | None:
        return statistics.median(self.raw) if self.raw else None

    def cells(self) -> list[str]:
        raw = self.raw_median
        ratio = f"{self.facade_median / raw:.3f}" if raw and self.ratio else "—"
        delta = "—" if raw is None else _number(self.facade_median - raw, signed=True)
        target, met = "—", "—"
        if self.target is not None:
            target = self.target.describe(self.unit)
            verdict = self.target.check(self.facade_median, raw)
            met = "—" if verdict is None else ("yes" if verdict else "**no**")
        raw_cell = _spread(self.raw) if self.raw else (self.raw_note or "—")
        runs = (
            str(len(self.facade)) if len(self.raw) in (0, len(self.facade)) else f"{len(self.facade)}/{len(self.raw)}"
        )
        return [self.figure, self.unit, runs, _spread(self.facade), raw_cell, ratio, delta, target, met]


_DASH = "\u2013"
_HEADER = [
    "figure",
    "unit",
    "runs",
    f"rtcstack: median (min{_DASH}max)",
    f"raw Room: median (min{_DASH}max)",
    "ratio",
    "Δ",
]


def table(rows: Sequence[Row]) -> str:
    """The figures as one Markdown table (ratio = rtcstack / raw, Δ = rtcstack - raw, on the medians)."""
    lines = [[*_HEADER, "target", "met"]]
    lines += [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(out)


def environment(root: Path, load_before: float, server: str = "loopback") -> list[tuple[str, str]]:
    """Date, machine, its load (other processes share it), Python and package versions (and livekit-server's),
    as (label, value) pairs."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    commit = _git_commit(root)
    if commit:
        dirty = _git(root, "status", "--porcelain", "--", "rtcstack")
        versions[-1] += f" (commit {commit}" + (", with uncommitted changes in rtcstack/)" if dirty else ")")
    if server == "livekit":
        versions.append(_livekit_server_version())
    return [
        ("date", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("machine", f"{os.cpu_count()} cores ({_cpu_model()}), {_ram_gib():.0f} GiB RAM, Linux {platform.release()}"),
        ("load average (1 min)", f"{load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after it"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("packages", ", ".join(versions)),
    ]


def render(
    rows: Sequence[Row],
    env: Sequence[tuple[str, str]],
    command: str,
    notes: Sequence[str],
    *,
    server: str = "loopback",
    quick: bool,
    isolated: bool,
) -> str:
    """The whole BENCHMARKS.md (or BENCHMARKS-livekit.md)."""
    against = (
        "a real livekit-server (`rtcstack.testing.LiveKitServer`: its process behind the signal proxy)"
        if server == "livekit"
        else "`rtcstack.testing.LoopbackServer`"
    )
    head = [
        "# Benchmarks" + (" against livekit-server" if server == "livekit" else ""),
        "",
        f"Measured with `{command}`: rtcstack's `Call` and the raw `livekit.rtc.Room` side by side in the same run",
        f"(alternating runs), against {against}",
        ("in a private network namespace." if isolated else "on the host network (not in a namespace).")
        + " Ratio is rtcstack / raw and Δ is rtcstack - raw, both on the medians; a target on Δ is a limit on what",
        "rtcstack adds.",
        *(["", "**--quick: a smoke test with few runs; these are not figures to quote.**"] if quick else []),
        "",
        *(f"- **{label}**: {value}" for label, value in env),
        "",
        table(rows),
        "",
        "## What each figure measures",
        "",
        *(f"- {note}" for note in notes),
    ]
    return "\n".join(head) + "\n"


def _number(value: float, *, signed: bool = False) -> str:
    size = abs(value)
    spec = ".0f" if size >= 100 else ".1f" if size >= 10 else ".3g"
    return format(value, ("+" if signed else "") + spec)


def _spread(samples: Sequence[float]) -> str:
    middle = _number(statistics.median(samples))
    if len(samples) == 1:
        return middle
    return f"{middle} ({_number(min(samples))}{_DASH}{_number(max(samples))})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return 0.0


def _livekit_server_version() -> str:
    """``livekit-server <version>`` of the binary LiveKitServer runs."""
    try:
        done = subprocess.run(
            [str(find_binary()), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired, LiveKitServerError):
        return "livekit-server (version unknown)"
    return done.stdout.strip().replace(" version ", " ") or "livekit-server (version unknown)"


def _git_commit(root: Path) -> str:
    return _git(root, "rev-parse", "--short", "HEAD")


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
