"""One Room's life: its URL, its options, its connect, the SDK's events bound to it, its retirement.

A call makes a fresh `livekit.rtc.Room` for its first connect and for every rejoin (`RoomSlot.open`); the handlers it
binds are guarded, so a Room the call has left behind is mute. A Room is retired in the background: closed once its
connect (if one still runs) has ended. `classify_join_failure` is the one place that says whether a failed join is
worth another try.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from livekit import rtc

from ._errors import (
    AuthRejectedError,
    ConfigError,
    ConnectError,
    ConnectTimeoutError,
    TokenExpiredError,
)
from ._options import CallOptions
from ._tasks import Tasks
from ._vocab import DisconnectReason

__all__ = [
    "RoomLike",
    "RoomSlot",
    "classify_connect_error",
    "classify_join_failure",
    "connect_error",
    "connect_failure",
    "normalize_url",
]

logger = logging.getLogger("rtcstack")

_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
_STATUS = re.compile(r"\b([45]\d\d)\b")
_PORT_AND_PATH = re.compile(r"\d+(/.*)?")
"""What follows "host:" in a URL written without a scheme ("localhost:7880" parses as scheme "localhost")."""
_SDK_CONNECT_GRACE = 30.0
"""Seconds past its 3 attempts of `connect_timeout` each that a Room's connect may take before it is abandoned."""
_SDK_ATTEMPT_TIMEOUT = 5.0
"""Seconds of one SDK connect or resume attempt: a Room given 5 s behaves as one given none (livekit 1.2.1)."""


class RoomLike(Protocol):
    """The part of `livekit.rtc.Room` the call uses (unit tests pass a fake)."""

    @property
    def local_participant(self) -> Any: ...
    @property
    def remote_participants(self) -> Mapping[str, Any]: ...
    def on(self, event: Any, callback: Callable[..., Any] | None = None) -> Callable[..., Any]: ...
    async def connect(self, url: str, token: str, options: rtc.RoomOptions = ...) -> None: ...
    async def disconnect(self) -> None: ...
    async def get_rtc_stats(self) -> rtc.RtcStats: ...


def normalize_url(url: object) -> str:
    """Check a LiveKit URL and return it with a ws/wss scheme (http/https are converted)."""
    if not isinstance(url, str) or not url:
        raise ConfigError("url must be a non-empty string")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigError("url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsed on access: raises ValueError for a port that is not 0-65535)
    except ValueError as exc:
        raise ConfigError(f"url is malformed: {exc}") from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        shown = parts.scheme or "(none)"
        hint = _scheme_hint(url) if not parts.scheme or _PORT_AND_PATH.fullmatch(parts.path) else ""
        raise ConfigError(f"url scheme must be ws, wss, http or https, not {shown}{hint}")
    if not parts.hostname:
        raise ConfigError("url has no host")
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def _scheme_hint(url: str) -> str:
    """The "did you mean 'wss://...'?" for a URL written without a scheme (ws:// for a loopback host), or ""."""
    if "://" in url or "?" in url or "@" in url:  # a scheme of its own, or a query or userinfo that may hold secrets
        return ""
    local = url.startswith(("localhost", "127.", "[::1]"))
    guess = ("ws://" if local else "wss://") + url
    try:
        normalize_url(guess)
    except ConfigError:
        return ""
    return f"; did you mean {guess!r}?"


def classify_connect_error(message: str, *, token_expired: bool) -> tuple[DisconnectReason, bool]:
    """Map the text of the SDK's `ConnectError` to (reason, transient).

    The SDK reports HTTP statuses of the signal upgrade or `/validate` in its error text. 401/403 mean the server
    refused the token: `token_expired` when our copy of it has expired, else `auth_rejected` (both final for this
    token). Other failures (timeouts, refused connections, 5xx) are transient.
    """
    status = _STATUS.search(message)
    code = int(status.group(1)) if status else None
    lowered = message.lower()
    if code in (401, 403) or "unauthorized" in lowered or "forbidden" in lowered:
        return ("token_expired" if token_expired else "auth_rejected"), False
    return "join_failure", True


def classify_join_failure(exc: Exception, *, token_expired: bool, can_refresh: bool) -> tuple[DisconnectReason, bool]:
    """(reason, transient) of any join that failed: a transient one is worth a rejoin, the others end the call.

    Our own `ConnectError` (no usable token) is final. A Room's connect that ran out of time is `network_error`; the
    SDK's `ConnectError` is read by `classify_connect_error`, except that an expired token refused is worth another
    try when a refresher can replace it. Anything else the SDK did not document is `unknown`, and retried.
    """
    if isinstance(exc, ConnectError):
        return exc.reason, False
    if isinstance(exc, asyncio.TimeoutError):
        return "network_error", True
    if isinstance(exc, rtc.ConnectError):
        reason, transient = classify_connect_error(str(exc), token_expired=token_expired)
        return reason, transient or (reason == "token_expired" and can_refresh)
    return "unknown", True


def connect_error(reason: DisconnectReason, message: str) -> ConnectError:
    """The `ConnectError` (or subclass) that tells a join failure of `reason`."""
    if reason == "auth_rejected":
        return AuthRejectedError(message)
    if reason == "token_expired":
        return TokenExpiredError(message)
    if reason == "connect_timeout":
        return ConnectTimeoutError(message)
    return ConnectError(message, reason=reason)


def connect_failure(exc: Exception, reason: DisconnectReason, scrub: Callable[[str], str]) -> ConnectError:
    """What `connect()` raises for a first join that failed with `exc` (our own `ConnectError` as it is)."""
    if isinstance(exc, ConnectError):
        return exc
    text = scrub(str(exc))
    sdk = isinstance(exc, rtc.ConnectError)
    error = connect_error(
        reason, f"connect failed ({reason}): {text}" if sdk else f"connect failed: {type(exc).__name__}: {text}"
    )
    error.__cause__ = exc
    return error


class RoomSlot:
    """The call's Room: a fresh one for each join, with the call's handlers bound, retired in the background.

    `tasks` runs the retirements, so waiting for the call's tasks waits for every Room to be closed.
    """

    def __init__(self, url: str, options: CallOptions, factory: Callable[[], RoomLike], tasks: Tasks) -> None:
        self._url = url
        self._options = options
        self._factory = factory
        self._tasks = tasks
        self._current: RoomLike | None = None
        self._last: RoomLike | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._budget = 0.0
        self._reconnecting = False

    @property
    def current(self) -> RoomLike | None:
        """The Room of the call's session, None between sessions."""
        return self._current

    @property
    def last(self) -> RoomLike | None:
        """The latest Room made, even once retired (None before the first connect)."""
        return self._last

    @property
    def reconnecting(self) -> bool:
        """The current Room's latest connection state is CONN_RECONNECTING."""
        return self._reconnecting

    def options(self, budget: float) -> rtc.RoomOptions:
        """The SDK's options for a connect of `budget` seconds.

        Its per-attempt timeout is bounded by the budget, so a Room left connecting after our deadline finishes (and
        is closed) soon after it; and by `_SDK_ATTEMPT_TIMEOUT`, which the SDK also uses for each attempt of its own
        resume: with the whole budget, a resume that the server holds (a cluster whose node died) is waited for that
        long instead of being retried as a full restart.
        """
        return rtc.RoomOptions(
            auto_subscribe=self._options.auto_subscribe,
            single_peer_connection=self._options.single_peer_connection,
            connect_timeout=min(budget, _SDK_ATTEMPT_TIMEOUT),
        )

    async def open(self, token: str, budget: float, handlers: Mapping[str, Callable[..., None]]) -> bool:
        """Make a fresh Room the current one, bind `handlers` (SDK event name -> callback, each called only while
        that Room is `current`) and connect it within `budget` seconds; on any failure it is retired.

        True when the call is to take it as connected now. The Room is connected when its connect() returns; its
        CONN_CONNECTED event comes later, behind the FFI events of every Room in the process (~1 ms alone, tens of
        ms with 10 connecting), and is then a no-op. The Room's event task starts inside connect() and may run
        before it returns: a reconnect it reported meanwhile goes on, and ends with the Room's own CONN_CONNECTED
        (False).
        """
        room = self._factory()
        self._current = self._last = room
        self._reconnecting = False
        self._bind(room, handlers)
        self._budget = budget
        task = self._connecting = asyncio.ensure_future(room.connect(self._url, token, self.options(budget)))
        try:
            await asyncio.wait_for(asyncio.shield(task), budget)
        except BaseException:
            if self._current is room:
                self.retire()
            raise
        finally:
            if self._connecting is task:
                self._connecting = None
        return self._current is room and not self._reconnecting

    def retire(self) -> None:
        """Close the current Room in the background (after its connect, if one still runs) and forget it."""
        room, connecting = self._current, self._connecting
        if room is None:
            return
        self._current = None
        self._connecting = None
        self._tasks.spawn(self._close(room, connecting, 3 * self._budget + _SDK_CONNECT_GRACE), "close a Room")

    async def stats(self) -> rtc.RtcStats:
        """The current Room's RTC stats (`LookupError` between Rooms)."""
        room = self._current
        if room is None:
            raise LookupError("no Room between rejoins")
        return await room.get_rtc_stats()

    @staticmethod
    async def _close(room: RoomLike, connecting: asyncio.Future[None] | None, bound: float) -> None:
        if connecting is not None:
            await asyncio.wait([connecting], timeout=bound)
            if not connecting.done():
                # Seen with livekit 1.2.1: a Room.connect() whose result never comes (connects cancelled as the same
                # identity joins again). Waiting on, the Room is never closed and disconnect() never returns.
                logger.warning("Room.connect() did not end within %g s; abandoned", bound)
                connecting.cancel()
                return
            if connecting.cancelled() or connecting.exception() is not None:
                return
        await room.disconnect()

    def _bind(self, room: RoomLike, handlers: Mapping[str, Callable[..., None]]) -> None:
        def guarded(event: str, handler: Callable[..., None]) -> Callable[..., None]:
            def call(*args: Any) -> None:
                if room is self._current:
                    if event == "connection_state_changed":
                        self._reconnecting = args[0] == rtc.ConnectionState.CONN_RECONNECTING
                    handler(*args)

            return call

        for event, handler in handlers.items():
            room.on(event, guarded(event, handler))
