"""The `rtcstack` command line: argument parsing, the one-line error convention, and the small commands.

Every failure the user can cause or meet (a bad argument, a missing key, a port in use, an unreachable server) ends
as one line on stderr, ``rtcstack: error: ...``, and a non-zero exit status: 2 for usage and configuration errors,
1 for failures at run time. No traceback reaches the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import errno
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from livekit import api

from ._call import create_call
from ._errors import ConnectError, RtcstackError
from ._options import CallOptions
from ._tokens import decode_token
from ._view import JsonView, LineView, LiveView, View, refresh_every, show_events, wants_color, wants_live
from ._vocab import DisconnectReason

if TYPE_CHECKING:
    from .testing import LoopbackServer

__all__ = [
    "CliError",
    "build_parser",
    "load_server",
    "main",
    "mint_token",
    "public_url",
    "run_async",
    "stop_on_signals",
]

PROG = "rtcstack"
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_TTL = 3600
DEFAULT_PORT = 7880
_MIN_SECRET_BYTES = 32

FAILED_REASONS: frozenset[DisconnectReason] = frozenset(
    {"network_error", "token_expired", "auth_rejected", "connect_timeout", "join_failure"}
)
"""Reasons for which `rtcstack watch` exits 1 after a call ended: it failed on our side rather than being ended."""


class CliError(Exception):
    """A failure to report as one line on stderr, with the exit status to end with."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (with a pointer to ``--help``), not usage plus error."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


def _positive_seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {value}")
    return value


def _credentials(args: argparse.Namespace) -> tuple[str, str]:
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


def _add_credential_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", metavar="K", help="API key (default: $LIVEKIT_API_KEY)")
    parser.add_argument("--api-secret", metavar="S", help="API secret (default: $LIVEKIT_API_SECRET)")


def _cmd_token(args: argparse.Namespace) -> int:
    key, secret = _credentials(args)
    if not args.room or not args.identity:
        raise CliError("--room and --identity must not be empty", EXIT_USAGE)
    print(mint_token(key, secret, room=args.room, identity=args.identity, name=args.name, ttl=args.ttl))
    return 0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, not {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, not {value}")
    return value


def load_server() -> type[LoopbackServer]:
    """The `LoopbackServer` class, or a one-line error when the ``testing`` extra is not installed."""
    try:
        from .testing import LoopbackServer
    except ImportError as exc:
        raise CliError(
            f"this command needs the testing extra (pip install 'rtcstack[testing]'): {exc}", EXIT_USAGE
        ) from None
    return LoopbackServer


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


def _cmd_serve(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    return run_async(_serve(args))


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
    key, secret = _credentials(args)

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


def _cmd_watch(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    return run_async(_watch(args))


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo  # the demo imports this module

    return run_demo(args)


def _add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more to stderr (-v: info, -vv: debug)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; each sets ``args.run`` to the function that carries it out."""
    parser = _Parser(
        prog=PROG,
        description="rtcstack: a typed Call facade over the LiveKit Python SDK, and tools to watch and try calls.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    token = commands.add_parser(
        "token",
        help="mint a development access token",
        description=(
            "Mint a LiveKit access token that lets IDENTITY join ROOM, signed with the API key and secret, "
            "and print it alone on stdout."
        ),
        epilog="example: rtcstack token --room demo --identity alice --ttl 600",
    )
    token.add_argument("--room", required=True, metavar="R", help="the room the token may join")
    token.add_argument("--identity", required=True, metavar="I", help="the participant identity")
    token.add_argument("--name", metavar="N", help="the participant's display name")
    token.add_argument(
        "--ttl",
        type=_positive_seconds,
        default=DEFAULT_TTL,
        metavar="S",
        help=f"lifetime in seconds (default: {DEFAULT_TTL})",
    )
    _add_credential_flags(token)
    token.set_defaults(run=_cmd_token)

    serve = commands.add_parser(
        "serve",
        help="run the LoopbackServer standalone (like livekit-server --dev)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run rtcstack's LoopbackServer, a LiveKit-protocol server for development and\n"
            "tests, until Ctrl-C or SIGTERM. It prints its URL, API key and API secret.\n"
            "The real SDK needs a non-loopback interface for its media (libwebrtc ignores\n"
            "lo), even when the URL is on 127.0.0.1."
        ),
        epilog="example: rtcstack serve --port 7880 --api-key devkey",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port to listen on, 0 for any (default: {DEFAULT_PORT})"
    )
    serve.add_argument(
        "--api-key", default="devkey", metavar="K", help="API key tokens are signed with (default: devkey)"
    )
    serve.add_argument("--api-secret", metavar="S", help="API secret (default: a random one, printed)")
    serve.add_argument(
        "--no-token-refresh",
        action="store_true",
        help="do not push refreshed tokens to clients (LiveKit does, at join and every few minutes)",
    )
    _add_verbose_flag(serve)
    serve.set_defaults(run=_cmd_serve)

    watch = commands.add_parser(
        "watch",
        help="join a room and show the call's state, roster and qualities live",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Join the room at URL and show the call live: its state (with a banner and the\n"
            "attempt number while it reconnects), each participant's connection quality,\n"
            "and the token's time left. On a terminal the view is redrawn in place;\n"
            "otherwise (or with --plain) it prints one line per event; --json prints one\n"
            "JSON object per event. Join with --token, or with --room and --identity and\n"
            "an API key and secret (the token is then minted here, and a fresh one before\n"
            "it expires). The token is never printed."
        ),
        epilog=(
            "exit status: 0 when the server ends the call (room deleted, removed, ...) or\n"
            "on Ctrl-C; 1 when the connect fails or the call ends on our side\n"
            "(network_error, token_expired, auth_rejected, join_failure).\n"
            "\n"
            "examples:\n"
            "  export LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=...\n"
            "  rtcstack watch ws://127.0.0.1:7880 --room demo --identity watcher\n"
            '  rtcstack watch wss://example.livekit.cloud --token "$TOKEN" --json | jq -c .'
        ),
    )
    watch.add_argument("url", metavar="URL", help="the LiveKit server (ws://, wss://, http:// or https://)")
    watch.add_argument("--token", metavar="T", help="an access token to join with")
    watch.add_argument("--room", metavar="R", help="the room to join (mints a token)")
    watch.add_argument("--identity", metavar="I", help="the identity to join as (mints a token)")
    watch.add_argument("--name", metavar="N", help="the display name (mints a token)")
    watch.add_argument(
        "--ttl",
        type=_positive_seconds,
        default=DEFAULT_TTL,
        metavar="S",
        help=f"lifetime of minted tokens in seconds (default: {DEFAULT_TTL})",
    )
    _add_credential_flags(watch)
    shape = watch.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print one JSON object per event")
    shape.add_argument("--plain", action="store_true", help="print one line per event, even on a terminal")
    watch.add_argument(
        "--connect-timeout",
        type=_positive_seconds,
        default=20,
        metavar="S",
        help="give up connecting after S seconds (default: 20)",
    )
    _add_verbose_flag(watch)
    watch.set_defaults(run=_cmd_watch)

    demo = commands.add_parser(
        "demo",
        help="play a scripted call on an embedded server and show it live",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Start a LoopbackServer, join a call and a synthetic agent, and play a story\n"
            "while the call's state, roster and qualities are shown live:\n"
            "  a. quality drop\n"
            "  b. a participant joins and leaves\n"
            "  c. signal drop and resume\n"
            "  d. token expiry with a refresher, and a rejoin\n"
            "  e. room deleted\n"
            "Each step waits for the events it expects. On Linux the demo runs in a\n"
            "private network namespace when it can, so it needs no network."
        ),
        epilog="exit status: 0 if every step's events happened, 1 otherwise (naming the failed steps).",
    )
    demo.add_argument(
        "--plain", action="store_true", help="one line per event instead of the live view (the default off a terminal)"
    )
    _add_verbose_flag(demo)
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except CliError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`rtcstack watch --json | head -1`): end quietly, and keep the interpreter's
        # final flush from failing on the same pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
