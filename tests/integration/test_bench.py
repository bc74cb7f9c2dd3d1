"""`python -m bench` still runs: a quick connect benchmark prints its table and writes it (no timing is checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_quick_connect_bench_prints_and_writes_its_table(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "connect", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [cells(line) for line in done.stdout.splitlines() if line.startswith("|") and "---" not in line]
    assert table[0][:3] == ["figure", "unit", "runs"]
    assert table[0][3].startswith("rtcstack: median") and table[0][4].startswith("raw Room: median")
    assert [row[0] for row in table[1:]] == ["connect latency", "connect: time outside Room.connect()"]
    assert all(row[2] == "5" for row in table[1:])
    written = output.read_text()
    assert written.startswith("# Benchmarks\n")
    assert done.stdout.strip() in written
    for label in ("date", "machine", "python", "packages"):
        assert f"- **{label}**: " in written
    assert "livekit-api " in written and "aiortc " in written and "rtcstack " in written
