"""No token anywhere we write: with DEBUG logging on, through connect, an app refresh, a server-pushed refresh, a
resume, a rejoin and errors, no token (nor its signature) shows in a record of our loggers (``rtcstack``,
``rtcstack.testing``), in ``repr(call)`` / ``repr(server)``, or in the text and args of any error we raise.

livekit's own loggers are at DEBUG too (so their records pass through ours' handlers' neighbourhood), but what
they print is the SDK's business: not asserted here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from rtcstack import (
    AuthRejectedError,
    Call,
    CallEvent,
    CallOptions,
    ReconnectPolicy,
    RtcstackError,
    TokenExpiredError,
    create_call,
)
from rtcstack.testing import LoopbackServer

WAIT = 20.0
FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=20, timeout=60)
OURS = ("rtcstack",)  # rtcstack.testing is a child


def expect(call: Call, name: Any) -> asyncio.Future[CallEvent]:
    return asyncio.ensure_future(call.wait_for(name, timeout=WAIT))


def chain(error: BaseException) -> Iterator[BaseException]:
    """The error, its cause and its context, recursively."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


class Written:
    """Everything we wrote that a token must not appear in."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def repr_of(self, obj: object) -> None:
        self.texts.append(repr(obj))

    def error(self, error: BaseException) -> None:
        for current in chain(error):
            if isinstance(current, RtcstackError):
                self.texts += [str(current), repr(current), repr(current.args)]


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in ("rtcstack", "rtcstack.testing", "livekit"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", [{"token_refresh": False}], indirect=True)
async def test_no_token_in_our_logs_reprs_or_errors(
    server: LoopbackServer, debug_logs: pytest.LogCaptureFixture
) -> None:
    written = Written()
    secrets: list[str] = []

    def refresher() -> str:
        token = server.token("alice", room="demo", ttl=600)
        secrets.append(token)
        return token

    # connect, then the app's refresher (the token enters its 3.5 s margin half a second in)
    app = server.token("alice", room="demo", ttl=4)
    secrets.append(app)
    options = CallOptions(token_refresh_margin=3.5, reconnect=FAST, token_refresh_timeout=2.0)
    call = create_call(server.url, app, token_refresher=refresher, options=options)
    written.repr_of(call)
    refreshed = expect(call, "token_refreshed")
    await call.connect()
    written.repr_of(call)
    await refreshed
    assert len(secrets) == 2

    # a refresh LiveKit pushes
    refreshed = expect(call, "token_refreshed")
    secrets.append(await server.refresh_token("alice", ttl=900))
    await refreshed

    # a resume, then a rejoin with a fresh Room
    reconnected = expect(call, "reconnected")
    await server.drop_signal("alice")
    await reconnected
    written.repr_of(call)
    reconnected = expect(call, "reconnected")
    await server.leave("alice", reason="server_shutdown")
    await reconnected
    written.repr_of(call)
    written.repr_of(server)
    await call.disconnect()

    # errors: a token the server refuses, a refresher that fails, a refresher that hands out someone else's token
    stranger = LoopbackServer(api_secret="not-the-same-secret-at-all-0123456789").token("alice", room="demo")
    expired = server.token("alice", room="demo", ttl=-5)
    mallory = server.token("mallory", room="demo", ttl=600)
    secrets += [stranger, expired, mallory]

    refused = create_call(server.url, stranger)
    with pytest.raises(AuthRejectedError) as info:
        await refused.connect()
    written.error(info.value)
    written.repr_of(refused)

    def fails() -> str:
        raise RuntimeError("auth backend down")

    for bad in (fails, lambda: mallory):
        broken = create_call(server.url, expired, token_refresher=bad)
        broken.on("token_refresh_failed", written.error)
        with pytest.raises(TokenExpiredError) as expired_info:
            await broken.connect()
        written.error(expired_info.value)
        written.repr_of(broken)
        await broken.disconnect()
    await refused.disconnect()

    ours = [debug_logs.handler.format(r) for r in debug_logs.records if r.name.startswith(OURS)]
    assert any("call state connected -> reconnecting" in text for text in ours)  # DEBUG was on
    assert len(written.texts) > 10
    for secret in secrets:
        for part in (secret, secret.rsplit(".", 1)[1]):
            assert not [text for text in ours + written.texts if part in text]
