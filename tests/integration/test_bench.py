"""`python -m bench` still runs: a quick connect benchmark prints its table and writes it (no timing is checked),
against LoopbackServer and against livekit-server; the quick media-health benchmark gives each of its figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rtcstack.testing._livekit import find_binary

ROOT = Path(__file__).resolve().parents[2]


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def bench(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> tuple[list[list[str]], str]:
    """Run ``python -m bench --quick *args``; the rows of the table it printed (header first), and its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [cells(line) for line in done.stdout.splitlines() if line.startswith("|") and "---" not in line], done.stdout


def test_quick_connect_bench_prints_and_writes_its_table(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    table, stdout = bench("--only", "connect", "--output", str(output))
    assert table[0][:3] == ["figure", "unit", "runs"]
    assert table[0][3].startswith("rtcstack: median") and table[0][4].startswith("raw Room: median")
    assert [row[0] for row in table[1:]] == ["connect latency", "connect: time outside Room.connect()"]
    assert all(row[2] == "5" for row in table[1:])
    written = output.read_text()
    assert written.startswith("# Benchmarks\n")
    assert stdout.strip() in written
    for label in ("date", "machine", "python", "packages"):
        assert f"- **{label}**: " in written
    assert "livekit-api " in written and "aiortc " in written and "rtcstack " in written


def test_livekit_run_measures_against_livekit_server_and_skips_loopback_only_benches(tmp_path: Path) -> None:
    """The connect figures come from a livekit-server process (a wrapper of the binary tells that it served), and
    sfu, which measures LoopbackServer itself, is skipped with its reason in the notes."""
    served = tmp_path / "served"
    wrapper = tmp_path / "livekit-server"
    wrapper.write_text(f'#!/bin/sh\n[ -n "$LIVEKIT_CONFIG" ] && echo served >> {served}\nexec {find_binary()} "$@"\n')
    wrapper.chmod(0o755)
    output = tmp_path / "BENCHMARKS-livekit.md"
    env = {**os.environ, "LIVEKIT_SERVER_BIN": str(wrapper)}
    table, stdout = bench("--server", "livekit", "--only", "connect", "--only", "sfu", "--output", str(output), env=env)
    assert [row[0] for row in table[1:]] == ["connect latency", "connect: time outside Room.connect()"]
    assert served.read_text() == "served\n"
    written = output.read_text()
    assert written.startswith("# Benchmarks against livekit-server\n")
    assert stdout.strip() in written
    assert "livekit-server 1." in written
    assert "- **sfu** (skipped: LoopbackServer only): it measures LoopbackServer's own CPU" in written


def test_quick_health_bench_gives_each_figure(tmp_path: Path) -> None:
    """Its child processes (the watch on and off, each stream) and the stall in this process all ran once."""
    table, _ = bench("--only", "health", "--output", str(tmp_path / "BENCHMARKS.md"), timeout=240)
    assert [row[0] for row in table[1:]] == [
        "1 call, 4 tracks each: CPU per call, watch on / off",
        "2 calls, 4 tracks each: CPU per call, watch on / off",
        "real stall → track_stalled",
        "resume → track_resumed",
        "CPU per audio frame: call.audio_stream / rtc.AudioStream",
        "CPU per audio frame: call.audio_stream, watch off / rtc.AudioStream",
    ]
    assert all(row[2] == "1" for row in table[1:])
    assert [row[4] for row in table[3:5]] == ["no such event", "no such event"]
