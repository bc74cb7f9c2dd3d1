"""The `rtcstack` command line: the argument parser of every command, `rtcstack token`, and `main`.

Every failure the user can cause or meet (a bad argument, a missing key, a port in use, an unreachable server) ends
as one line on stderr, ``rtcstack: error: ...``, and a non-zero exit status: 2 for usage and configuration errors,
1 for failures at run time. No traceback reaches the terminal.

The commands that need more than a few lines live in their own modules (`_serve`, `_watch`, `_demo`); what they
share is in `_common`. Imports flow one way: this module -> commands -> `_common` -> the library.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ._common import DEFAULT_TTL, EXIT_FAILURE, EXIT_USAGE, PROG, CliError, credentials, mint_token
from ._demo import run_demo
from ._serve import run_serve
from ._watch import run_watch

__all__ = ["build_parser", "main"]

DEFAULT_PORT = 7880


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


def _add_credential_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", metavar="K", help="API key (default: $LIVEKIT_API_KEY)")
    parser.add_argument("--api-secret", metavar="S", help="API secret (default: $LIVEKIT_API_SECRET)")


def _cmd_token(args: argparse.Namespace) -> int:
    key, secret = credentials(args)
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
    serve.set_defaults(run=run_serve)

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
    watch.set_defaults(run=run_watch)

    demo = commands.add_parser(
        "demo",
        help="play a scripted call on an embedded server and show it live",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Start a LoopbackServer, join a call and a synthetic agent, and play a story\n"
            "while the call's state, roster, qualities and media are shown live:\n"
            "  a. quality drop\n"
            "  b. a participant joins and leaves\n"
            "  c. signal drop and resume\n"
            "  d. token expiry with a refresher, and a rejoin\n"
            "  e. the agent's audio stalls and resumes\n"
            "  f. room deleted\n"
            "Each step waits for the events it expects. On Linux the demo runs in a\n"
            "private network namespace when it can, so it needs no network."
        ),
        epilog="exit status: 0 if every step's events happened, 1 otherwise (naming the failed steps).",
    )
    demo.add_argument(
        "--plain", action="store_true", help="one line per event instead of the live view (the default off a terminal)"
    )
    _add_verbose_flag(demo)
    demo.set_defaults(run=run_demo)
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
