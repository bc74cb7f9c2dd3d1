"""`python -m bench [--server {loopback,livekit}] [--quick] [--only NAME ...] [--output PATH]`: run the benchmarks,
print the table, write it."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path

from ._calls import CALLS
from ._cluster import CLUSTER
from ._common import Bench, Context, log
from ._connect import CONNECT, CROWD
from ._events import EVENTS, ROSTER
from ._health import HEALTH
from ._media import MEDIA
from ._recovery import EXPIRED, RESUME
from ._report import Row, environment, render, table
from ._serve import SERVERS
from ._sfu import SFU

BENCHES: tuple[Bench, ...] = (CONNECT, RESUME, EXPIRED, MEDIA, EVENTS, ROSTER, CALLS, CROWD, SFU, HEALTH, CLUSTER)
ROOT = Path(__file__).resolve().parents[1]
OUTPUT = {"loopback": ROOT / "BENCHMARKS.md", "livekit": ROOT / "BENCHMARKS-livekit.md"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default="loopback",
        help="LoopbackServer, or a real livekit-server (LiveKitServer: $LIVEKIT_SERVER_BIN or livekit-server on PATH)",
    )
    parser.add_argument("--quick", action="store_true", help="a few runs of each figure (a smoke test)")
    parser.add_argument(
        "--only",
        action="append",
        choices=[bench.name for bench in BENCHES],
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(bench.name for bench in BENCHES)}",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the table (default: BENCHMARKS.md, or BENCHMARKS-livekit.md with --server livekit)",
    )
    return parser.parse_args(argv)


async def run(benches: list[Bench], ctx: Context) -> tuple[list[Row], int]:
    """Every benchmark in turn, and how many failed; a failure is told in the remarks and the others still run."""
    rows: list[Row] = []
    failed = 0
    for bench in benches:
        log(f"{bench.name} ...")
        try:
            rows += await bench.run(ctx)
        except Exception as exc:
            failed += 1
            ctx.remarks.append(f"{bench.name} failed: {type(exc).__name__}: {exc}")
            log(ctx.remarks[-1])
    return rows, failed


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    chosen = [bench for bench in BENCHES if not args.only or bench.name in args.only]
    runnable = [bench for bench in chosen if args.server == "loopback" or not bench.loopback_only]
    load_before = os.getloadavg()[0]
    ctx = Context(quick=args.quick, server=args.server)
    rows, failed = asyncio.run(run(runnable, ctx))
    print(table(rows))
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    notes = [note for bench in chosen for note in bench.notes_for(args.server)]
    notes += [f"**In this run**: {remark}" for remark in ctx.remarks]
    output = args.output or OUTPUT[args.server]
    output.write_text(
        render(
            rows,
            environment(ROOT, load_before, args.server),
            command,
            notes,
            server=args.server,
            quick=args.quick,
            isolated=bool(os.environ.get("RTCSTACK_NETNS")),
        )
    )
    log(f"wrote {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
