"""Helpers for the tests of the real-server harness: a fake server script, and the processes the harness left."""

from __future__ import annotations

import contextlib
from pathlib import Path


def script(tmp_path: Path, body: str, name: str = "fake-server") -> Path:
    """An executable shell script ``name`` in ``tmp_path`` running ``body``."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def processes_with(marker: str) -> list[int]:
    """Pids whose command line or environment holds ``marker`` (a server's config, with its keys, is in its
    environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if any(marker.encode() in (entry / part).read_bytes() for part in ("cmdline", "environ")):
                    found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """The process has exited (perhaps not yet reaped by its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
