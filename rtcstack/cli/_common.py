"""What every command shares: the one-line error, credentials and minted tokens, logging, running a command's
coroutine, Ctrl-C handling, and loading the optional LoopbackServer.

This module imports the library only, never a command module: commands -> here -> library.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import signal
import sys
import warnings
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from livekit import api

if TYPE_CHECKING:
    from ..testing import LoopbackServer

__all__ = [
    "DEFAULT_TTL",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "PROG",
    "CliError",
    "credentials",
    "load_server",
    "mint_token",
    "public_url",
    "run_async",
    "setup_logging",
    "stop_on_signals",
]

PROG = "rtcstack"
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_TTL = 3600
_MIN_SECRET_BYTES = 32


class CliError(Exception):
    """A failure to report as one line on stderr, with the exit status to end with."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def credentials(args: argparse.Namespace) -> tuple[str, str]:
    """The API key and secret from the flags, else from ``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET``."""
    key = args.api_key or os.environ.get("LIVEKIT_API_KEY", "")
    secret = args.api_secret or os.environ.get("LIVEKIT_API_SECRET", "")
    missing = [name for name, value in (("key", key), ("secret", secret)) if not value]
    if missing:
        what = " and ".join(f"API {name}" for name in missing)
        flags = " / ".join(f"--api-{name}" for name in missing)
        envs = " / ".join(f"LIVEKIT_API_{name.upper()}" for name in missing)
        raise CliError(f"missing {what}: pass {flags} or set {envs}", EXIT_USAGE)
    if len(secret.encode()) < _MIN_SECRET_BYTES:
        print(
            f"{PROG}: warning: the API secret is shorter than {_MIN_SECRET_BYTES} bytes, weak for HS256",
            file=sys.stderr,
        )
    return key, secret


def mint_token(
    api_key: str, api_secret: str, *, room: str, identity: str, name: str | None = None, ttl: float = DEFAULT_TTL
) -> str:
    """A LiveKit access token (HS256) that lets ``identity`` join ``room`` for ``ttl`` seconds."""
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .with_ttl(datetime.timedelta(seconds=ttl))
    )
    if name:
        token.with_name(name)
    with warnings.catch_warnings():
        # PyJWT warns about secrets under 32 bytes; the command line says so in one line of its own instead.
        warnings.filterwarnings("ignore", message="The HMAC key is")
        return token.to_jwt()


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment, fit to print (a token may hide in a query string)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    with contextlib.suppress(ValueError):
        if parts.port is not None:
            netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine; a Ctrl-C that reaches here (outside `stop_on_signals`) ends with status 130."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 130


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """While inside, SIGINT (Ctrl-C) and SIGTERM set ``stop`` instead of interrupting (where the loop allows)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals on this platform
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def setup_logging(verbosity: int) -> None:
    """Log to stderr: warnings only by default, info with ``-v``, debug with ``-vv``.

    By default the SDK's own log is off: it reports a routine resume at ERROR level, and the views already show
    what it means for the call. ``-v`` turns it on.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("livekit").setLevel(level if verbosity > 0 else logging.CRITICAL + 1)


def load_server() -> type[LoopbackServer]:
    """The `LoopbackServer` class, or a one-line error when the ``testing`` extra is not installed."""
    try:
        from ..testing import LoopbackServer
    except ImportError as exc:
        raise CliError(
            f"this command needs the testing extra (pip install 'rtcstack[testing]'): {exc}", EXIT_USAGE
        ) from None
    return LoopbackServer
