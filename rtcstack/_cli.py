"""The `rtcstack` command line: argument parsing, the one-line error convention, and the small commands.

Every failure the user can cause or meet (a bad argument, a missing key, a port in use, an unreachable server) ends
as one line on stderr, ``rtcstack: error: ...``, and a non-zero exit status: 2 for usage and configuration errors,
1 for failures at run time. No traceback reaches the terminal.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from livekit import api

__all__ = ["CliError", "build_parser", "main", "mint_token"]

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


def _add_credential_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", metavar="K", help="API key (default: $LIVEKIT_API_KEY)")
    parser.add_argument("--api-secret", metavar="S", help="API secret (default: $LIVEKIT_API_SECRET)")


def _cmd_token(args: argparse.Namespace) -> int:
    key, secret = _credentials(args)
    if not args.room or not args.identity:
        raise CliError("--room and --identity must not be empty", EXIT_USAGE)
    print(mint_token(key, secret, room=args.room, identity=args.identity, name=args.name, ttl=args.ttl))
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except CliError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
