"""Token claims, usability and refresh checks, run_refresher, and http_token_refresher against a real
aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from livekit import api

from rtcstack._errors import ConfigError, TokenError, TokenRefreshError
from rtcstack._tokens import (
    NOT_BEFORE_LEEWAY,
    TokenClaims,
    check_refreshed,
    check_usable,
    decode_token,
    http_token_refresher,
    join_ask_timeout,
    join_refresh,
    refresh_delay,
    refresh_due,
    run_refresher,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
EXP = int(NOW.timestamp()) + 600


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt(payload: Any, header: Any = None, *, raw_payload: str | None = None) -> str:
    """An unsigned-looking JWT: header.payload.signature, each base64url (the signature is never checked)."""
    head = b64(json.dumps(header if header is not None else {"alg": "HS256", "typ": "JWT"}).encode())
    body = raw_payload if raw_payload is not None else b64(json.dumps(payload).encode())
    return f"{head}.{body}.{b64(b'SIGNATURE-SECRET-PART')}"


def claims_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"sub": "alice", "exp": EXP, "video": {"room": "demo", "roomJoin": True}}
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


TOKEN = jwt(claims_payload(name="Alice"))


# -- decode_token ------------------------------------------------------------------------------------------


def test_decode_a_real_livekit_token() -> None:
    token = (
        api.AccessToken("devkey", "a-long-enough-development-secret-value")
        .with_identity("bob")
        .with_name("Bob")
        .with_kind("agent")
        .with_ttl(timedelta(minutes=10))
        .with_grants(api.VideoGrants(room_join=True, room="standup"))
        .to_jwt()
    )
    claims = decode_token(token)
    assert (claims.identity, claims.room, claims.name, claims.kind) == ("bob", "standup", "Bob", "agent")
    assert claims.expires_at.tzinfo is timezone.utc
    assert claims.not_before is not None
    assert claims.expires_at - claims.not_before == timedelta(minutes=10)


def test_decode_minimal_token() -> None:
    claims = decode_token(jwt(claims_payload(exp=EXP + 0.5)))
    assert claims == TokenClaims(
        identity="alice",
        room="demo",
        name="",
        expires_at=datetime.fromtimestamp(EXP + 0.5, tz=timezone.utc),
        not_before=None,
        kind=None,
    )


def test_decode_ignores_non_string_name_and_kind() -> None:
    claims = decode_token(jwt(claims_payload(name=3, kind="")))
    assert (claims.name, claims.kind) == ("", None)


BAD_TOKENS: list[tuple[object, str]] = [
    (None, "must be a str, not NoneType"),
    (42, "must be a str, not int"),
    (TOKEN.encode(), "must be a str, not bytes"),
    ("", "empty"),
    ("  \n", "empty"),
    ("abc.def", "expected 3 dot-separated parts, got 2"),
    (TOKEN + ".extra", "got 4"),
    (jwt({}, raw_payload="eyJzdWIi$$$"), "payload is not base64url"),
    (jwt({}, raw_payload="abcde"), "payload is not base64url"),
    (jwt({}, raw_payload=b64(b"not json at all")), "payload is not JSON"),
    (jwt({}, raw_payload=b64(b"\xff\xfe")), "payload is not JSON"),
    ("%%%." + TOKEN.split(".", 1)[1], "header is not base64url"),
    (jwt(["a", "list"]), "must be JSON objects"),
    (jwt(claims_payload(), header=[1]), "must be JSON objects"),
    (jwt(claims_payload(exp=None)), "no 'exp' claim"),
    (jwt(claims_payload(exp="1700000000")), "'exp' claim is not a number"),
    (jwt(claims_payload(exp=True)), "'exp' claim is not a number"),
    (jwt({}, raw_payload=b64(b'{"sub": "a", "exp": NaN, "video": {"room": "r"}}')), "'exp' claim is not a number"),
    (jwt(claims_payload(exp=10**300)), "'exp' claim is out of range"),
    (jwt(claims_payload(sub=None)), "no 'sub'"),
    (jwt(claims_payload(sub="")), "no 'sub'"),
    (jwt(claims_payload(sub=7)), "no 'sub'"),
    (jwt(claims_payload(video=None)), "no 'video.room' grant"),
    (jwt(claims_payload(video={"roomJoin": True})), "no 'video.room' grant"),
    (jwt(claims_payload(video={"room": ""})), "no 'video.room' grant"),
    (jwt(claims_payload(video="demo")), "no 'video.room' grant"),
    (jwt(claims_payload(nbf="soon")), "'nbf' claim is not a number"),
]


@pytest.mark.parametrize(("token", "message"), BAD_TOKENS)
def test_decode_rejects(token: object, message: str) -> None:
    with pytest.raises(TokenError, match=message) as info:
        decode_token(token)
    assert not isinstance(info.value, TokenRefreshError)
    assert info.value.reason is None


def test_decode_leaves_the_times_to_check_usable() -> None:
    """An expired token, an ``nbf`` or ``iat`` in the future, an odd ``iat``, ``aud`` or ``iss``: all decode (PyJWT
    would refuse each if its checks ran), so connect can refresh an expired token and `check_usable` has the say."""
    now = int(datetime.now(timezone.utc).timestamp())
    odd = claims_payload(exp=now - 3600, nbf=now + 3600, iat=now + 3600, aud=7, iss=["x"], jti=5, sub="alice")
    claims = decode_token(jwt(odd))
    assert claims.expires_at == datetime.fromtimestamp(now - 3600, tz=timezone.utc)
    assert claims.not_before == datetime.fromtimestamp(now + 3600, tz=timezone.utc)
    assert decode_token(jwt(claims_payload(exp=now - 1, iat="yesterday"))).identity == "alice"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"alg": "HS256", "kid": 1}, id="kid-not-str"),
        pytest.param({"alg": "HS256", "crit": ["SECRET-EXTENSION"], "SECRET-EXTENSION": 1}, id="crit"),
        pytest.param({"alg": "HS256", "b64": False}, id="b64-false"),
    ],
)
def test_decode_words_other_pyjwt_refusals_without_the_token(header: dict[str, Any]) -> None:
    token = jwt(claims_payload(), header=header)
    with pytest.raises(TokenError, match=r"^token is not a valid JWT \((InvalidTokenError|DecodeError)\)$") as info:
        decode_token(token)
    assert "SECRET" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- check_usable, refresh_due ------------------------------------------------------------------------------


def claims_at(expires_in: float, not_before_in: float | None = None) -> TokenClaims:
    return TokenClaims(
        identity="alice",
        room="demo",
        name="",
        expires_at=NOW + timedelta(seconds=expires_in),
        not_before=None if not_before_in is None else NOW + timedelta(seconds=not_before_in),
        kind=None,
    )


def test_usable_token_passes() -> None:
    check_usable(claims_at(600, not_before_in=-5), NOW, 60)
    check_usable(claims_at(1, not_before_in=NOT_BEFORE_LEEWAY), NOW)


@pytest.mark.parametrize(
    ("claims", "margin", "message"),
    [
        (claims_at(-1), 0.0, "has expired"),
        (claims_at(0), 0.0, "has expired"),
        (claims_at(30), 60.0, "expires too soon"),
    ],
)
def test_expired_or_expiring_token(claims: TokenClaims, margin: float, message: str) -> None:
    with pytest.raises(TokenError, match=message) as info:
        check_usable(claims, NOW, margin)
    assert info.value.reason == "token_expired"


def test_token_not_valid_yet() -> None:
    with pytest.raises(TokenError, match="not valid yet") as info:
        check_usable(claims_at(600, not_before_in=NOT_BEFORE_LEEWAY + 1), NOW)
    assert info.value.reason == "auth_rejected"


@pytest.mark.parametrize(
    ("expires_in", "margin", "step"),
    [
        (600, 60.0, None),  # outside the margin: join with it
        (61, 60.0, None),
        (60, 60.0, "ask"),  # inside, still valid: ask once, join with the best token
        (8, 60.0, "ask"),
        (0.001, 60.0, "ask"),
        (0, 60.0, "wait"),  # expired: only a refreshed token can join
        (-5, 60.0, "wait"),
        (-5, 0.0, "wait"),
        (5, 0.0, None),
    ],
)
def test_join_refresh(expires_in: float, margin: float, step: str | None) -> None:
    assert join_refresh(claims_at(expires_in), NOW, margin) == step


@pytest.mark.parametrize(
    ("expires_in", "refresh_timeout", "seconds"),
    [
        (30, 10.0, 10.0),  # the refresh timeout
        (8, 10.0, 4.0),  # half of what is left of the token
        (8, 1.0, 1.0),
        (0.5, 10.0, 0.25),
        (-1, 10.0, 0.0),  # never negative
    ],
)
def test_join_ask_timeout(expires_in: float, refresh_timeout: float, seconds: float) -> None:
    assert join_ask_timeout(claims_at(expires_in), NOW, refresh_timeout) == seconds


def test_refresh_due_is_margin_before_expiry() -> None:
    assert refresh_due(claims_at(600), 60) == NOW + timedelta(seconds=540)
    assert refresh_due(claims_at(600), 0) == NOW + timedelta(seconds=600)


@pytest.mark.parametrize(
    ("expires_in", "margin", "delay"),
    [(600, 60, 540), (600, 0, 600), (30, 60, 15), (1, 60, 0.5), (-5, 60, 0)],
    ids=["outside-the-margin", "no-margin", "shorter-than-the-margin", "about-to-expire", "expired"],
)
def test_refresh_delay_is_the_margin_or_half_of_what_is_left(expires_in: float, margin: float, delay: float) -> None:
    """A token that lives less than the margin is due halfway through what is left, so a refresher that hands out
    such tokens is not called in a tight loop."""
    assert refresh_delay(claims_at(expires_in), NOW, margin) == pytest.approx(delay)


# -- run_refresher -------------------------------------------------------------------------------------------


async def test_run_sync_and_async_refreshers() -> None:
    async def async_refresher() -> str:
        await asyncio.sleep(0)
        return TOKEN

    assert await run_refresher(lambda: TOKEN, timeout=30) == TOKEN
    assert await run_refresher(async_refresher, timeout=30) == TOKEN


async def test_refresher_that_raises_is_chained() -> None:
    cause = RuntimeError("identity service down")

    async def failing() -> str:
        raise cause

    with pytest.raises(TokenRefreshError, match="raised RuntimeError") as info:
        await run_refresher(failing, timeout=30)
    assert info.value.__cause__ is cause
    assert info.value.status is None

    def sync_failing() -> str:
        raise KeyError("missing")

    with pytest.raises(TokenRefreshError, match="raised KeyError"):
        await run_refresher(sync_failing, timeout=30)


async def test_hung_refresher_times_out_and_is_cancelled() -> None:
    cancelled = []

    async def hung() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return TOKEN

    with pytest.raises(TokenRefreshError, match=r"did not answer within 0\.01 s"):
        await run_refresher(hung, timeout=0.01)
    assert cancelled == [True]


@pytest.mark.parametrize(
    ("result", "message"),
    [(None, "returned NoneType"), (TOKEN.encode(), "returned bytes"), (42, "returned int"), ("", "empty token")],
)
async def test_refresher_garbage(result: object, message: str) -> None:
    async def garbage() -> Any:
        return result

    with pytest.raises(TokenRefreshError, match=message):
        await run_refresher(garbage, timeout=30)
    with pytest.raises(TokenRefreshError, match=message):
        await run_refresher(lambda: result, timeout=30)  # type: ignore[arg-type, return-value]  # garbage on purpose


async def test_refresh_errors_pass_through() -> None:
    original = TokenRefreshError("HTTP 503", status=503)

    def refresher() -> str:
        raise original

    with pytest.raises(TokenRefreshError) as info:
        await run_refresher(refresher, timeout=30)
    assert info.value is original


# -- check_refreshed ----------------------------------------------------------------------------------------

CURRENT = decode_token(TOKEN)


def test_refreshed_token_accepted() -> None:
    new = jwt(claims_payload(exp=EXP + 600, name="Alice"))
    assert check_refreshed(CURRENT, new).expires_at == CURRENT.expires_at + timedelta(seconds=600)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (jwt(claims_payload(exp=EXP + 600, sub="mallory")), "another identity"),
        (jwt(claims_payload(exp=EXP + 600, video={"room": "other"})), "another room"),
        (jwt(claims_payload(exp=EXP)), "does not expire later"),
        (jwt(claims_payload(exp=EXP - 1)), "does not expire later"),
        ("garbage", "refreshed token is invalid: token is not a JWT"),
    ],
)
def test_refreshed_token_refused(token: str, message: str) -> None:
    with pytest.raises(TokenRefreshError, match=message):
        check_refreshed(CURRENT, token)


def test_invalid_refreshed_token_is_chained() -> None:
    with pytest.raises(TokenRefreshError) as info:
        check_refreshed(CURRENT, jwt(claims_payload(sub=None)))
    assert isinstance(info.value.__cause__, TokenError)


# -- http_token_refresher: configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://auth.example.com/token",
        "http://127.0.0.1:8080/token",
        "http://127.1.2.3/token",
        "http://[::1]:9000/token",
        "http://localhost/token",
        "http://LOCALHOST./token",
    ],
)
def test_accepted_urls(url: str) -> None:
    assert callable(http_token_refresher(url))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://auth.example.com/token", "must use https"),
        ("http://127.0.0.1.example.com/token", "must use https"),
        ("http://localhost.example.com/token", "must use https"),
        ("http://10.0.0.1/token", "must use https"),
        ("ftp://auth.example.com/token", "must be https"),
        ("wss://auth.example.com/token", "must be https"),
        ("not a url", "must be https"),
        ("https:///token", "must be https"),
        ("https://[zz]/token", "invalid"),
    ],
)
def test_refused_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        http_token_refresher(url)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": ""},
        {"method": "PO ST"},
        {"field": ""},
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": float("inf")},
        {"timeout": True},
    ],
)
def test_refused_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        http_token_refresher("https://auth.example.com/token", **kwargs)


# -- http_token_refresher against a real server on 127.0.0.1 --------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class TokenServer:
    server: TestServer
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def token_server() -> AsyncIterator[TokenServer]:
    app = web.Application()
    holder: list[TokenServer] = []

    async def record(request: web.Request) -> None:
        holder[0].seen.append(Seen(request.method, request.path, dict(request.headers), await request.read()))

    async def ok(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.json_response({"token": TOKEN, "other": "x"})

    async def status(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.json_response({"error": "nope", "token": TOKEN}, status=int(request.match_info["code"]))

    async def slow(request: web.Request) -> web.StreamResponse:
        await record(request)
        await holder[0].release.wait()
        return web.json_response({"token": TOKEN})

    async def text(request: web.Request) -> web.StreamResponse:
        return web.Response(text=f"<html>{TOKEN}</html>")

    async def other_field(request: web.Request) -> web.StreamResponse:
        return web.json_response({"jwt": TOKEN})

    async def not_a_string(request: web.Request) -> web.StreamResponse:
        return web.json_response({"token": 12345})

    async def a_list(request: web.Request) -> web.StreamResponse:
        return web.json_response([TOKEN])

    app.router.add_route("*", "/ok", ok)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_post("/slow", slow)
    app.router.add_post("/text", text)
    app.router.add_post("/other-field", other_field)
    app.router.add_post("/not-a-string", not_a_string)
    app.router.add_post("/list", a_list)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    holder.append(TokenServer(server))
    try:
        yield holder[0]
    finally:
        holder[0].release.set()
        await server.close()


async def test_post_with_json_body(token_server: TokenServer) -> None:
    refresh = http_token_refresher(token_server.url("/ok"), json={"room": "demo", "identity": "alice"})
    assert await refresh() == TOKEN
    [seen] = token_server.seen
    assert (seen.method, seen.path) == ("POST", "/ok")
    assert json.loads(seen.body) == {"room": "demo", "identity": "alice"}


async def test_get_with_headers(token_server: TokenServer) -> None:
    refresh = http_token_refresher(
        token_server.url("/ok"), method="get", headers={"Authorization": "Bearer app-session"}
    )
    assert await refresh() == TOKEN
    [seen] = token_server.seen
    assert seen.method == "GET"
    assert seen.headers["Authorization"] == "Bearer app-session"
    assert seen.body == b""


@pytest.mark.parametrize("code", [500, 401, 404, 302])
async def test_error_status(token_server: TokenServer, code: int) -> None:
    refresh = http_token_refresher(token_server.url(f"/status/{code}"))
    with pytest.raises(TokenRefreshError, match=f"HTTP {code}") as info:
        await refresh()
    assert info.value.status == code
    assert "nope" not in str(info.value)


async def test_slow_server_times_out(token_server: TokenServer) -> None:
    refresh = http_token_refresher(token_server.url("/slow"), timeout=0.05)
    with pytest.raises(TokenRefreshError, match=r"timed out after 0\.05 s") as info:
        await refresh()
    assert info.value.status is None


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/text", "not JSON"),
        ("/other-field", "no string 'token' field"),
        ("/not-a-string", "no string 'token' field"),
        ("/list", "no string 'token' field"),
    ],
)
async def test_bad_answers(token_server: TokenServer, path: str, message: str) -> None:
    with pytest.raises(TokenRefreshError, match=message) as info:
        await http_token_refresher(token_server.url(path))()
    assert info.value.status is None


async def test_custom_field(token_server: TokenServer) -> None:
    assert await http_token_refresher(token_server.url("/other-field"), field="jwt")() == TOKEN


async def test_shared_client_is_used_and_left_open(token_server: TokenServer) -> None:
    async with httpx.AsyncClient(headers={"X-Shared": "yes"}) as client:
        refresh = http_token_refresher(token_server.url("/ok"), client=client)
        assert await refresh() == TOKEN
        assert await refresh() == TOKEN
        assert not client.is_closed
    assert [seen.headers.get("X-Shared") for seen in token_server.seen] == ["yes", "yes"]


async def test_own_client_is_closed_each_call(token_server: TokenServer, monkeypatch: pytest.MonkeyPatch) -> None:
    clients: list[httpx.AsyncClient] = []

    class Recording(httpx.AsyncClient):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            clients.append(self)

    monkeypatch.setattr(httpx, "AsyncClient", Recording)
    refresh = http_token_refresher(token_server.url("/ok"))
    assert await refresh() == TOKEN
    assert await refresh() == TOKEN
    assert len(clients) == 2
    assert all(client.is_closed for client in clients)


async def test_connection_refused(token_server: TokenServer) -> None:
    url = token_server.url("/ok")
    await token_server.server.close()
    with pytest.raises(TokenRefreshError, match="request failed: ConnectError") as info:
        await http_token_refresher(url)()
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_run_refresher_keeps_the_http_status(token_server: TokenServer) -> None:
    with pytest.raises(TokenRefreshError) as info:
        await run_refresher(http_token_refresher(token_server.url("/status/503")), timeout=30)
    assert info.value.status == 503


# -- secrets --------------------------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


async def _raised(action: Callable[[], Awaitable[object]]) -> BaseException:
    with pytest.raises(Exception) as info:
        await action()
    return info.value


async def test_no_token_text_in_any_error(token_server: TokenServer) -> None:
    payload_part = TOKEN.split(".")[1]
    secret_looking = jwt(claims_payload(sub=None))

    async def decode(token: object) -> object:
        return decode_token(token)

    async def refreshed(token: str) -> object:
        return check_refreshed(CURRENT, token)

    async def bad_refresher() -> object:
        return await run_refresher(lambda: TOKEN.encode(), timeout=30)  # type: ignore[arg-type, return-value]  # bytes on purpose

    async def http(path: str, **kwargs: Any) -> object:
        return await http_token_refresher(token_server.url(path), **kwargs)()

    actions: list[Callable[[], Awaitable[object]]] = [
        lambda: decode(TOKEN + ".x"),
        lambda: decode(TOKEN.encode()),
        lambda: decode(secret_looking),
        lambda: decode(jwt({}, raw_payload=b64(b"{not json " + TOKEN.encode()))),
        lambda: refreshed(secret_looking),
        lambda: refreshed(jwt(claims_payload(exp=EXP + 1, sub="mallory"))),
        bad_refresher,
        lambda: http("/status/500"),
        lambda: http("/text"),
        lambda: http("/other-field"),
        lambda: http("/slow", timeout=0.01),
    ]
    for action in actions:
        error = await _raised(action)
        for exc in _chain(error):
            for text in (str(exc), repr(exc)):
                assert TOKEN not in text
                assert payload_part not in text
                assert secret_looking.split(".")[1] not in text
    assert TOKEN not in repr(CURRENT)
