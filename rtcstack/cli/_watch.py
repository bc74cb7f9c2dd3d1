"""`rtcstack watch`: join a room and show the call live (a panel, a line per event, or JSON lines)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from .._call import create_call
from .._errors import ConnectError, RtcstackError
from .._options import CallOptions
from .._tokens import decode_token
from .._vocab import DisconnectReason
from ._common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    PROG,
    CliError,
    credentials,
    mint_token,
    public_url,
    run_async,
    setup_logging,
    stop_on_signals,
)
from ._views import JsonView, LineView, LiveView, View, refresh_every, show_events, wants_color, wants_live

__all__ = ["FAILED_REASONS", "run_watch"]

FAILED_REASONS: frozenset[DisconnectReason] = frozenset(
    {"network_error", "token_expired", "auth_rejected", "connect_timeout", "join_failure"}
)
"""Reasons for which `rtcstack watch` exits 1 after a call ended: it failed on our side rather than being ended."""


def run_watch(args: argparse.Namespace) -> int:
    """Watch the call described by the parsed arguments of `rtcstack watch`; the exit status."""
    setup_logging(args.verbose)
    return run_async(_watch(args))


def _watch_token(args: argparse.Namespace) -> tuple[str, Callable[[], str] | None]:
    """The token to join with, and a refresher when we hold the key and secret to mint new ones."""
    minting = [flag for flag, value in (("--room", args.room), ("--identity", args.identity)) if value]
    if args.token:
        extra = minting + [f for f, v in (("--api-key", args.api_key), ("--api-secret", args.api_secret)) if v]
        if extra:
            raise CliError(f"give --token or {', '.join(extra)}, not both", EXIT_USAGE)
        return args.token, None
    if len(minting) < 2:
        raise CliError("give --token, or --room and --identity with an API key and secret", EXIT_USAGE)
    key, secret = credentials(args)

    def mint() -> str:
        return mint_token(key, secret, room=args.room, identity=args.identity, name=args.name, ttl=args.ttl)

    return mint(), mint


async def _watch(args: argparse.Namespace) -> int:
    token, refresher = _watch_token(args)
    try:
        claims = decode_token(token)
        call = create_call(
            args.url,
            token,
            token_refresher=refresher,
            options=CallOptions(connect_timeout=float(args.connect_timeout)),
        )
    except RtcstackError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    shown = public_url(args.url)
    view: View
    if args.json:
        view = JsonView(call, sys.stdout)
    elif args.plain or not wants_live():
        view = LineView(call, sys.stdout, elapsed=False)
    else:
        title = f"{PROG} watch  {shown}  room {claims.room}  as {claims.identity}"
        view = LiveView(call, sys.stdout, title=title, elapsed=False, color=wants_color())
    stop = asyncio.Event()
    shower = asyncio.create_task(show_events(call.events(), view))
    ticker = asyncio.create_task(refresh_every(view))
    connecting = asyncio.create_task(call.connect())
    stopping = asyncio.create_task(stop.wait())
    try:
        with stop_on_signals(stop):
            await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if connecting.done() and connecting.exception() is None:
                await asyncio.wait({shower, stopping}, return_when=asyncio.FIRST_COMPLETED)
            connecting.cancel()
            await asyncio.wait({connecting})
            await call.disconnect()
            await shower
    finally:
        for task in (stopping, ticker, shower):
            task.cancel()
        view.close()
    failure = None if connecting.cancelled() else connecting.exception()
    if isinstance(failure, ConnectError):
        raise CliError(f"could not connect to {shown}: {failure}")
    if failure is not None:
        raise failure
    if stop.is_set():
        return 0
    return EXIT_FAILURE if call.disconnect_reason in FAILED_REASONS else 0
