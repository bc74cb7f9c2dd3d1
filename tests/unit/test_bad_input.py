"""The bad day, no network: bad URLs, tokens, options, refreshers and handlers, methods called at the wrong time,
and an SDK that misbehaves. Each bad input gets a clear `RtcstackError` subclass and message.

The Room is a fake behind the `RoomLike` protocol (as in test_call_pump.py): `connect` runs the script the test
gives it, so a test decides when a connect ends, fails or hangs.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jwt as pyjwt
import pytest
from livekit import rtc
from pydantic import ValidationError

from rtcstack import (
    AuthRejectedError,
    CallOptions,
    ConfigError,
    ConnectError,
    ConnectTimeoutError,
    InvalidStateError,
    ReconnectPolicy,
    TokenError,
    TokenExpiredError,
    TokenRefreshError,
    _room,
    create_call,
)
from rtcstack._call import Call
from rtcstack._emitter import EventEmitter
from rtcstack._room import normalize_url
from rtcstack._tokens import decode_token
from rtcstack._vocab import EVENT_ARGS
from tests.fakes import SECRET, FakeParticipant, mint

URL = "ws://fake"


Script = Callable[["FakeRoom"], Any]


class FakeRoom:
    """Records handlers and the token it was given; `connect` awaits the test's script (if any), then returns."""

    def __init__(self, script: Script | None = None) -> None:
        self.handlers: dict[str, list[Callable[..., Any]]] = {}
        self.local_participant = FakeParticipant("me", sid="PA_me")
        self.remote_participants: dict[str, FakeParticipant] = {}
        self.script = script
        self.tokens: list[str] = []
        self._token: str | None = None  # where the SDK keeps a token LiveKit pushed
        self.disconnects = 0
        self.returned = False  # its connect() returned: the Room is connected and must be closed

    def on(self, event: str, callback: Callable[..., Any] | None = None) -> Callable[..., Any]:
        assert callback is not None
        self.handlers.setdefault(event, []).append(callback)
        return callback

    def emit(self, event: str, *args: Any) -> None:
        for handler in self.handlers.get(event, []):
            handler(*args)

    async def connect(self, url: str, token: str, options: rtc.RoomOptions | None = None) -> None:
        self.tokens.append(token)
        if self.script is not None:
            await self.script(self)
        self.returned = True

    async def disconnect(self) -> None:
        self.disconnects += 1


class Rooms:
    """A room factory handing out FakeRooms that follow successive scripts (no script: connect at once)."""

    def __init__(self, *scripts: Script | None) -> None:
        self.scripts = list(scripts)
        self.made: list[FakeRoom] = []

    def __call__(self) -> FakeRoom:
        room = FakeRoom(self.scripts.pop(0) if self.scripts else None)
        self.made.append(room)
        return room


def make_call(
    rooms: Rooms,
    token: str | None = None,
    *,
    refresher: Callable[[], Any] | None = None,
    clock: Callable[[], datetime] | None = None,
    **options: Any,
) -> Call:
    token = token or mint()
    extra = {"_clock": clock} if clock is not None else {}
    return Call(
        URL,
        token,
        decode_token(token),
        token_refresher=refresher,
        options=CallOptions(**options),
        _room_factory=rooms,
        **extra,
    )


def room_of(call: Call) -> object:
    """``call.room``, typed for comparing with a FakeRoom."""
    return call.room


def record(call: Call, *names: str) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    for name in names:
        call.on(name, lambda *args, _n=name: seen.append((_n, *args)))  # type: ignore[call-overload]  # any event
    return seen


def forge(**claims: Any) -> str:
    """A signed token with exactly these claims (``AccessToken`` always sets ``nbf`` to now)."""
    return pyjwt.encode(claims, SECRET, algorithm="HS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


GOOD = mint()
HEADER, PAYLOAD, SIGNATURE = GOOD.split(".")


def soon() -> int:
    """An ``exp`` ten minutes from now (from when the test runs, not from collection: the suite takes longer)."""
    return int(time.time()) + 600


# -- create_call: URL ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("", "url must be a non-empty string", id="empty"),
        pytest.param(None, "url must be a non-empty string", id="None"),
        pytest.param(7880, "url must be a non-empty string", id="int"),
        pytest.param(b"wss://example.com", "url must be a non-empty string", id="bytes"),
        pytest.param("ftp://example.com", "url scheme must be ws, wss, http or https, not ftp", id="ftp"),
        pytest.param(
            "example.com",
            r"url scheme must be ws, wss, http or https, not \(none\); did you mean 'wss://example.com'\?$",
            id="no-scheme",
        ),
        pytest.param(
            "localhost:7880",
            r"url scheme must be ws, wss, http or https, not localhost; did you mean 'ws://localhost:7880'\?$",
            id="host-port",
        ),
        pytest.param(
            "my-project.livekit.cloud/rtc",
            r"not \(none\); did you mean 'wss://my-project.livekit.cloud/rtc'\?$",
            id="no-scheme-path",
        ),
        pytest.param("127.0.0.1:7880", r"did you mean 'ws://127.0.0.1:7880'\?$", id="loopback-no-scheme"),
        pytest.param("example.com?secret=x", r"not \(none\)$", id="no-scheme-no-hint-with-a-query"),
        pytest.param("ftp:/example.com", r"not ftp$", id="other-scheme-no-hint"),
        pytest.param("ws://", "url has no host", id="no-host"),
        pytest.param("wss:///rtc", "url has no host", id="path-only"),
        pytest.param("ws://:7880", "url has no host", id="port-only"),
        pytest.param("ws://exa mple.com", "url must not contain whitespace or control characters", id="space"),
        pytest.param(" wss://example.com", "url must not contain whitespace or control characters", id="lead"),
        pytest.param("wss://example.com\n", "url must not contain whitespace or control characters", id="newline"),
        pytest.param("wss://exa\x00mple.com", "url must not contain whitespace or control characters", id="nul"),
        pytest.param("ws://[::1", "url is malformed: Invalid IPv6 URL", id="ipv6"),
        pytest.param("ws://example.com:port", "url is malformed: Port could not be cast", id="port-text"),
        pytest.param("ws://example.com:65536", "url is malformed: Port out of range", id="port-range"),
    ],
)
def test_bad_url_is_a_config_error(url: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_call(url, GOOD)


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("http://localhost:7880", "ws://localhost:7880"),
        ("HTTPS://example.com/lk", "wss://example.com/lk"),
        ("ws://[::1]:7880", "ws://[::1]:7880"),
    ],
)
def test_http_urls_become_websocket_urls(url: str, normalized: str) -> None:
    assert normalize_url(url) == normalized


# -- create_call: token ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param("", "token is empty", id="empty"),
        pytest.param("  ", "token is empty", id="blank"),
        pytest.param(None, "token must be a str, not NoneType", id="None"),
        pytest.param(GOOD.encode(), "token must be a str, not bytes", id="bytes"),
        pytest.param("not-a-jwt", "token is not a JWT: expected 3 dot-separated parts, got 1", id="not-a-jwt"),
        pytest.param(f"Bearer {GOOD}", "token header is not base64url", id="bearer-prefix"),
        pytest.param(f"{HEADER}.{PAYLOAD[:-3]}!!!.{SIGNATURE}", "token payload is not base64url", id="bad-base64"),
        pytest.param(f"{HEADER}.{b64(b'{oops')}.{SIGNATURE}", "token payload is not JSON", id="not-json"),
        pytest.param(f"{HEADER}.{b64(b'[' * 100_000)}.{SIGNATURE}", "token payload is not JSON", id="deep-json"),
        pytest.param(f"{GOOD}\n", "token signature is not base64url", id="trailing-newline"),
        pytest.param(f"{HEADER}.{PAYLOAD}.", "token signature is not base64url", id="unsigned"),
        pytest.param(forge(sub="me", video={"room": "demo"}), "token has no 'exp' claim", id="no-exp"),
        pytest.param(forge(sub="me", exp=soon()), "token has no 'video.room' grant", id="no-grant"),
        pytest.param(
            forge(sub="me", exp=soon(), video={"roomJoin": True}), "token has no 'video.room' grant", id="no-room"
        ),
        pytest.param(forge(exp=soon(), video={"room": "demo"}), r"token has no 'sub' \(identity\) claim", id="no-sub"),
    ],
)
def test_bad_token_is_a_token_error(token: Any, message: str) -> None:
    with pytest.raises(TokenError, match=message):
        create_call(URL, token)


async def test_expired_token_without_refresher_fails_at_connect_before_any_room() -> None:
    rooms = Rooms()
    call = make_call(rooms, mint(ttl=-5))
    with pytest.raises(TokenExpiredError, match="the token has expired and no fresh token could be had") as info:
        await call.connect()
    assert isinstance(info.value, TokenError) and info.value.reason == "token_expired"
    assert rooms.made == [] and call.disconnect_reason == "token_expired"


async def test_token_not_valid_yet_fails_at_connect_before_any_room() -> None:
    """The server refuses a token whose ``nbf`` is ahead of its clock (beyond a 10 s leeway for skew)."""
    rooms = Rooms()
    call = make_call(rooms, forge(sub="me", exp=soon(), nbf=int(time.time()) + 300, video={"room": "demo"}))
    with pytest.raises(AuthRejectedError, match=r"token is not valid yet \(its 'nbf' is in the future\)"):
        await call.connect()
    assert rooms.made == [] and call.disconnect_reason == "auth_rejected"


async def test_token_valid_within_the_leeway_connects() -> None:
    rooms = Rooms()
    call = make_call(rooms, forge(sub="me", exp=soon(), nbf=int(time.time()) + 5, video={"room": "demo"}))
    await call.connect()
    assert call.connection_state == "connected"
    await call.disconnect()


# -- options ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field_name"),
    [
        pytest.param(lambda: CallOptions(connect_timeout=-1.0), "connect_timeout", id="connect_timeout<0"),
        pytest.param(lambda: CallOptions(connect_timeout=0.0), "connect_timeout", id="connect_timeout=0"),
        pytest.param(lambda: CallOptions(token_refresh_timeout=-1.0), "token_refresh_timeout", id="refresh<0"),
        pytest.param(lambda: CallOptions(token_refresh_margin=-1.0), "token_refresh_margin", id="margin<0"),
        pytest.param(lambda: CallOptions(connect_timeout=math.inf), "connect_timeout", id="connect_timeout=inf"),
        pytest.param(
            lambda: CallOptions(connect_timeout="20"),  # type: ignore[arg-type]  # deliberately wrong
            "connect_timeout",
            id="connect_timeout=str",
        ),
        pytest.param(
            lambda: CallOptions(reconnect_policy=None),  # type: ignore[call-arg]  # deliberately unknown
            "reconnect_policy",
            id="unknown-option",
        ),
        pytest.param(lambda: ReconnectPolicy(initial_delay=5.0, max_delay=1.0), "max_delay", id="max<initial"),
        pytest.param(lambda: ReconnectPolicy(multiplier=0.5), "multiplier", id="multiplier<1"),
        pytest.param(lambda: ReconnectPolicy(max_attempts=0), "max_attempts", id="max_attempts=0"),
        pytest.param(lambda: ReconnectPolicy(initial_delay=-1.0), "initial_delay", id="initial_delay<0"),
        pytest.param(lambda: ReconnectPolicy(timeout=0.0), "timeout", id="policy-timeout=0"),
        pytest.param(
            lambda: CallOptions(reconnect={"max_attempts": 0}),  # type: ignore[arg-type]  # a dict is validated too
            "max_attempts",
            id="nested",
        ),
    ],
)
def test_bad_options_are_refused_when_built(build: Callable[[], object], field_name: str) -> None:
    """Options are pydantic models: a bad value raises ``ConfigError`` (a ``ValueError``) where the options are
    built, before ``create_call`` sees them, with pydantic's message naming the field."""
    with pytest.raises(ConfigError, match=field_name) as info:
        build()
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, ValidationError)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"connect_timeout": 5.0}, "options must be a CallOptions", id="dict"),
        pytest.param(ReconnectPolicy(), "options must be a CallOptions", id="a-policy"),
    ],
)
def test_options_that_are_not_call_options_are_a_config_error(options: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_call(URL, GOOD, options=options)


@pytest.mark.parametrize(
    "timeout",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1.0, id="negative"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param("5", id="str"),
        pytest.param(True, id="bool"),
    ],
)
async def test_bad_connect_timeout_is_a_config_error_before_anything_starts(timeout: Any) -> None:
    """inf and nan reach the SDK as ``int(timeout * 1000)`` (OverflowError, ValueError): refused here instead."""
    rooms = Rooms()
    call = make_call(rooms)
    with pytest.raises(ConfigError, match="timeout must be a positive, finite number of seconds"):
        await call.connect(timeout=timeout)
    assert call.connection_state == "idle" and rooms.made == []


# -- refresher -------------------------------------------------------------------------------------------------


def _raises() -> str:
    raise RuntimeError("auth backend down")


async def _async_raises() -> str:
    raise RuntimeError("auth backend down")


REFRESHERS: list[Any] = [
    pytest.param(lambda: _raises, "token refresher raised RuntimeError", id="raises"),
    pytest.param(lambda: _async_raises, "token refresher raised RuntimeError", id="async-raises"),
    pytest.param(lambda: lambda: None, "token refresher returned NoneType, not str", id="None"),
    pytest.param(lambda: lambda: mint().encode(), "token refresher returned bytes, not str", id="bytes"),
    pytest.param(lambda: lambda: 42, "token refresher returned int, not str", id="int"),
    pytest.param(lambda: lambda: "", "token refresher returned an empty token", id="empty"),
    pytest.param(lambda: lambda: "garbage", "refreshed token is invalid: token is not a JWT", id="garbage"),
    pytest.param(lambda: lambda: mint("mallory"), "refreshed token is for another identity", id="identity"),
    pytest.param(lambda: lambda: mint(room="elsewhere"), "refreshed token is for another room", id="room"),
    pytest.param(lambda: lambda: mint(ttl=-60), "does not expire later than the current one", id="older"),
]


@pytest.mark.parametrize(("make_refresher", "message"), REFRESHERS)
async def test_bad_refresher_at_connect_is_reported_and_the_connect_fails(
    make_refresher: Callable[[], Callable[[], Any]], message: str
) -> None:
    """The token has expired, so connect() asks the refresher first; a bad answer is a `token_refresh_failed`
    event carrying a `TokenRefreshError`, then connect() fails with `TokenExpiredError` and no Room is made."""
    rooms = Rooms()
    call = make_call(rooms, mint(ttl=-5), refresher=make_refresher())
    seen = record(call, "token_refresh_failed")
    with pytest.raises(TokenExpiredError):
        await call.connect()
    [(_, error)] = seen
    assert isinstance(error, TokenRefreshError) and re.search(message, str(error))
    assert rooms.made == []


async def test_a_refresher_that_hangs_is_cancelled_at_the_refresh_timeout() -> None:
    cancelled = asyncio.Event()

    async def hangs() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return "never"

    call = make_call(Rooms(), mint(ttl=-5), refresher=hangs, token_refresh_timeout=0.05)
    seen = record(call, "token_refresh_failed")
    with pytest.raises(TokenExpiredError):
        await call.connect()
    assert str(seen[0][1]) == "token refresher did not answer within 0.05 s"
    assert cancelled.is_set()


def test_a_refresher_that_is_not_callable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="token_refresher must be callable"):
        create_call(URL, GOOD, token_refresher="https://auth.example.com/token")  # type: ignore[arg-type]


# -- handlers and event names ----------------------------------------------------------------------------------


def _sync_raises(*args: object) -> None:
    raise RuntimeError("handler bug")


async def _async_handler_raises(*args: object) -> None:
    await asyncio.sleep(0)
    raise RuntimeError("handler bug")


def _raises_cancelled(*args: object) -> None:
    raise asyncio.CancelledError


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(_sync_raises, id="raises"),
        pytest.param(_async_handler_raises, id="async-raises"),
        pytest.param(_raises_cancelled, id="raises-CancelledError"),
    ],
)
async def test_a_bad_handler_is_logged_and_breaks_nothing(bad: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Registered first on every lifecycle event, it must not stop the handlers after it nor the call."""
    rooms = Rooms()
    call = make_call(rooms, reconnect=ReconnectPolicy(initial_delay=0.0, max_delay=0.0))
    names = ("state_changed", "connected", "reconnecting", "reconnected", "disconnected")
    for name in names:
        call.on(name, bad)  # type: ignore[call-overload]  # deliberately wrong for some events
    seen = record(call, *names)
    await call.connect()
    rooms.made[0].emit("connection_state_changed", rtc.ConnectionState.CONN_RECONNECTING)
    rooms.made[0].emit("connection_state_changed", rtc.ConnectionState.CONN_CONNECTED)
    await call.disconnect()
    assert [name for name, *_ in seen] == [
        "state_changed",
        "state_changed",
        "connected",
        "state_changed",
        "reconnecting",
        "state_changed",
        "reconnected",
        "state_changed",
        "disconnected",
    ]
    errors = [r for r in caplog.records if r.name == "rtcstack" and r.levelno >= logging.ERROR]
    assert len(errors) == len(seen) and all(bad.__qualname__ in r.getMessage() for r in errors)


@pytest.mark.parametrize("handler", [None, 42, "print"], ids=["None", "int", "str"])
def test_a_handler_that_is_not_callable_is_a_config_error(handler: Any) -> None:
    call = make_call(Rooms())
    if handler is None:
        with pytest.raises(ConfigError, match="handler for 'connected' must be callable, got NoneType"):
            call.on("connected")(handler)  # type: ignore[type-var]  # deliberately not callable
    else:
        with pytest.raises(
            ConfigError, match=f"handler for 'connected' must be callable, got {type(handler).__name__}"
        ):
            call.on("connected", handler)


@pytest.mark.parametrize(
    "register",
    [
        pytest.param(lambda call: call.on("nope", print), id="on"),
        pytest.param(lambda call: call.on("nope"), id="on-as-decorator"),
        pytest.param(lambda call: call.once("nope", print), id="once"),
        pytest.param(lambda call: call.off("nope"), id="off"),
        pytest.param(lambda call: call.on("Connected", print), id="wrong-case"),
    ],
)
def test_an_unknown_event_name_is_a_config_error_at_registration(register: Callable[[Call], object]) -> None:
    call = make_call(Rooms())
    with pytest.raises(ConfigError, match=r"unknown event name '(nope|Connected)'(; did you mean 'connected'\?)?; "):
        register(call)


@pytest.mark.parametrize(
    ("name", "nearest"),
    [("Connected", "connected"), ("reconected", "reconnected"), ("participant_join", "participant_joined")],
)
def test_a_misspelled_event_name_gets_the_nearest_known_one(name: str, nearest: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown event name '{name}'; did you mean '{nearest}'\?; expected one of"):
        make_call(Rooms()).on(name, print)  # type: ignore[call-overload]  # deliberately misspelled


def _reason_only(reason: str) -> None:
    """Takes what "disconnected" passes, nothing else."""


def _two_required(reason: str, extra: str) -> None:
    """Needs one argument more than "disconnected" passes."""


@pytest.mark.parametrize(
    ("name", "handler", "message"),
    [
        ("disconnected", lambda: None, r"<lambda>\(\) cannot take what 'disconnected' passes: 1 argument \(reason\)"),
        ("connected", _reason_only, r"_reason_only\(reason: 'str'\) -> 'None' cannot take what 'connected' passes: "),
        ("disconnected", _two_required, r"cannot take what 'disconnected' passes: 1 argument \(reason\) \(missing"),
        ("state_changed", _reason_only, r"'state_changed' passes: 2 arguments \(state, previous\)"),
        ("reconnecting", lambda *, attempt: None, r"'reconnecting' passes: 1 argument \(attempt\)"),
    ],
    ids=["too-few", "too-many", "one-missing", "two-passed", "keyword-only"],
)
def test_a_handler_that_cannot_take_the_arguments_is_refused_at_registration(
    name: str, handler: Callable[..., None], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Called with the wrong arguments it would raise inside the call, logged where nobody looks: refused at once,
    by on(), once() and the decorator form alike, and not registered (the event then calls nothing)."""
    emitter: Any = EventEmitter()
    for register in (
        lambda: emitter.on(name, handler),
        lambda: emitter.once(name, handler),
        lambda: emitter.on(name)(handler),
    ):
        with pytest.raises(ConfigError, match=message):
            register()
    emitter._emit(name, *(None,) * len(EVENT_ARGS[name]))
    assert [r for r in caplog.records if r.name == "rtcstack"] == []


class _Banner:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def show(self, reason: str) -> None:
        self.seen.append(reason)

    def __call__(self, *args: object) -> None:
        self.seen.append(f"called with {args}")


async def test_handlers_of_every_shape_that_can_take_the_arguments_are_accepted_and_called() -> None:
    """*args, defaults, bound methods, functools.partial, callable objects, builtins (no signature to read) and async
    handlers: all registered, and each is called with the event's arguments."""
    import functools

    seen: list[object] = []
    banner = _Banner()
    call = make_call(Rooms())

    def with_prefix(prefix: str, reason: str) -> None:
        seen.append((prefix, reason))

    async def later(reason: str) -> None:
        seen.append(("async", reason))

    call.on("disconnected", lambda *args: seen.append(args))
    call.on("disconnected", lambda reason, extra="x": seen.append((reason, extra)))
    call.on("disconnected", banner.show)
    call.on("disconnected", functools.partial(with_prefix, "partial"))
    call.on("disconnected", banner)
    call.on("disconnected", later)
    call.once("disconnected", print)
    call.on("connected", functools.partial(with_prefix, "connected", "now"))
    await call.connect()
    await call.disconnect()
    assert seen == [
        ("connected", "now"),
        ("client_initiated",),
        ("client_initiated", "x"),
        ("partial", "client_initiated"),
        ("async", "client_initiated"),
    ]
    assert banner.seen == ["client_initiated", "called with ('client_initiated',)"]


async def test_wait_for_an_unknown_event_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown event name 'nope'"):
        await make_call(Rooms()).wait_for("nope")  # type: ignore[arg-type]  # deliberately unknown


# -- methods in the wrong state --------------------------------------------------------------------------------


def test_room_before_connect_is_an_invalid_state_error() -> None:
    with pytest.raises(InvalidStateError, match=r"the call has no Room before connect\(\)"):
        _ = make_call(Rooms()).room


async def test_connect_while_connected_is_an_invalid_state_error() -> None:
    call = make_call(Rooms())
    await call.connect()
    with pytest.raises(InvalidStateError, match=r"connect\(\) called while connected"):
        await call.connect()
    with pytest.raises(InvalidStateError, match=r"connect\(\) called while connected"):
        async with call:
            pass
    assert call.connection_state == "connected"
    await call.disconnect()


async def test_connect_while_connecting_fails_and_the_first_connect_completes() -> None:
    gate = asyncio.Event()

    async def waits(room: FakeRoom) -> None:
        await gate.wait()

    call = make_call(Rooms(waits))
    first = asyncio.ensure_future(call.connect())
    await asyncio.sleep(0)
    with pytest.raises(InvalidStateError, match=r"connect\(\) called while connecting"):
        await call.connect()
    gate.set()
    await first
    assert call.connection_state == "connected"
    await call.disconnect()


async def test_connect_while_reconnecting_is_an_invalid_state_error() -> None:
    rooms = Rooms()
    call = make_call(rooms)
    await call.connect()
    rooms.made[0].emit("connection_state_changed", rtc.ConnectionState.CONN_RECONNECTING)
    with pytest.raises(InvalidStateError, match=r"connect\(\) called while reconnecting"):
        await call.connect()
    await call.disconnect()


async def test_disconnect_before_connect_does_nothing_and_connect_after_disconnect_starts_anew() -> None:
    rooms = Rooms()
    call = make_call(rooms)
    seen = record(call, "state_changed")
    await call.disconnect()
    assert (call.connection_state, call.disconnect_reason, seen) == ("idle", None, [])
    await call.connect()
    await call.disconnect()
    await call.connect()
    assert (call.connection_state, call.disconnect_reason) == ("connected", None)
    assert room_of(call) is rooms.made[1]
    await call.disconnect()
    assert [room.disconnects for room in rooms.made] == [1, 1]


# -- the SDK misbehaves ------------------------------------------------------------------------------------------


async def test_a_cancelled_connect_never_leaves_the_call_connected() -> None:
    """Cancel connect() after 1, 2, ... 11 loop iterations, across the instant the Room's connect returns. Whatever
    the moment, connect() raising CancelledError means the call ended ("cancelled") and its Room, if its connect
    returned, is closed: it must not stay connected with nobody to close it (a participant left on the server, a
    Room and tasks leaked). A cancel that came too late (or that `asyncio.wait_for` swallowed as the Room's connect
    returned) leaves a connected call. Both outcomes must occur in the range, or it does not cross the instant."""
    outcomes: list[str] = []
    for ticks in range(1, 12):
        rooms = Rooms()
        call = make_call(rooms)
        task = asyncio.ensure_future(call.connect())
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            outcomes.append("cancelled")
            assert (call.connection_state, call.disconnect_reason) == ("disconnected", "cancelled"), ticks
            await call.disconnect()
            assert [room.disconnects for room in rooms.made] == [int(room.returned) for room in rooms.made], ticks
        else:
            outcomes.append("connected")
            assert call.connection_state == "connected", ticks
            await call.disconnect()
            assert [room.disconnects for room in rooms.made] == [1], ticks
    assert {"cancelled", "connected"} <= set(outcomes), outcomes


async def test_an_undocumented_sdk_error_fails_connect_at_once() -> None:
    """Not a `livekit.rtc.ConnectError` (the SDK raises bare Exceptions, e.g. "participant already exists"): the
    connect fails now with a `ConnectError`, instead of waiting for the deadline and calling it a timeout."""

    async def breaks(room: FakeRoom) -> None:
        raise RuntimeError("participant already exists")

    call = make_call(Rooms(breaks))
    with pytest.raises(ConnectError) as info:
        await call.connect(timeout=1.0)
    assert type(info.value) is ConnectError and info.value.reason == "unknown"
    assert str(info.value) == "connect failed: RuntimeError: participant already exists"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert call.disconnect_reason == "unknown"
    await call.disconnect()


async def test_an_undocumented_sdk_error_during_a_rejoin_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    """A rejoin that dies of an unexpected error must not leave the call silent in "reconnecting" forever."""

    async def breaks(room: FakeRoom) -> None:
        raise RuntimeError("participant already exists")

    rooms = Rooms(None, breaks, None)
    call = make_call(rooms, reconnect=ReconnectPolicy(initial_delay=0.0, max_delay=0.0))
    seen = record(call, "reconnecting", "reconnected", "disconnected")
    await call.connect()
    reconnected = asyncio.ensure_future(call.wait_for("reconnected", timeout=5))
    rooms.made[0].emit("disconnected", rtc.DisconnectReason.SIGNAL_CLOSE)
    await reconnected
    assert seen == [("reconnecting", 1), ("reconnecting", 2), ("reconnected",)]
    assert "rejoin attempt 1 failed: RuntimeError: participant already exists" in caplog.text
    assert room_of(call) is rooms.made[2]
    await call.disconnect()


async def test_a_room_connect_that_never_ends_is_abandoned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK's connect never returns (seen with livekit 1.2.1): past its own attempts and a grace period the
    call cancels it, so disconnect() returns and no task of the call is left."""
    monkeypatch.setattr(_room, "_SDK_CONNECT_GRACE", 0.05)
    abandoned = asyncio.Event()

    async def never_ends(room: FakeRoom) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            abandoned.set()

    rooms = Rooms(never_ends)
    call = make_call(rooms)
    with pytest.raises(ConnectTimeoutError):
        await call.connect(timeout=0.01)
    await asyncio.wait_for(call.disconnect(), 5)
    assert abandoned.is_set() and asyncio.all_tasks() == {asyncio.current_task()}
    assert rooms.made[0].disconnects == 0
    assert "Room.connect() did not end within 0.08 s; abandoned" in caplog.text
