"""`rtcstack serve`: the LoopbackServer on its own, until Ctrl-C or SIGTERM, with what a client needs printed."""

from __future__ import annotations

import argparse
import asyncio
import errno
import sys

from ._common import PROG, CliError, load_server, run_async, setup_logging, stop_on_signals

__all__ = ["run_serve"]


def run_serve(args: argparse.Namespace) -> int:
    """Run the server with the parsed arguments of `rtcstack serve`; 0 once it stopped."""
    setup_logging(args.verbose)
    return run_async(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    server_class = load_server()
    server = server_class(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        api_secret=args.api_secret or None,
        token_refresh=not args.no_token_refresh,
    )
    try:
        await server.start()
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        if exc.errno == errno.EADDRINUSE:
            raise CliError(f"cannot listen on {where}: the port is already in use") from None
        raise CliError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    with stop_on_signals(stop):
        try:
            print(f"LoopbackServer (a LiveKit-protocol server for development) on {server.url}", flush=True)
            print(f"  url:           {server.url}", flush=True)
            print(f"  http url:      {server.http_url}", flush=True)
            print(f"  api key:       {server.api_key}", flush=True)
            print(f"  api secret:    {server.api_secret}", flush=True)
            print(f"  token refresh: {'off' if args.no_token_refresh else 'on'}", flush=True)
            print(
                f"join with: export LIVEKIT_API_KEY={server.api_key} LIVEKIT_API_SECRET={server.api_secret}; "
                f"{PROG} watch {server.url} --room demo --identity alice",
                flush=True,
            )
            print("press Ctrl-C to stop", flush=True)
            await stop.wait()
        finally:
            print("stopping", file=sys.stderr, flush=True)
            await server.close()
    return 0
