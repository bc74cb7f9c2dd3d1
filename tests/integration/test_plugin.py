"""The pytest plugin (entry point ``pytest11``): the ``loopback_server`` fixture, here and in pytester runs."""

from __future__ import annotations

import pytest
from livekit import api, rtc

from rtcstack.testing import LoopbackServer

pytest_plugins = ["pytester"]

_INI = """
[pytest]
asyncio_mode = {mode}
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

_USES_AND_CLOSES = """
from livekit import api

started = []


async def test_uses_the_server(loopback_server):
    started.append(loopback_server)
    assert loopback_server.url.startswith("ws://127.0.0.1:")
    key, secret = loopback_server.api_key, loopback_server.api_secret
    async with api.LiveKitAPI(loopback_server.http_url, key, secret) as client:
        assert list((await client.room.list_rooms(api.ListRoomsRequest())).rooms) == []


def test_the_server_was_closed():
    assert "not started" in repr(started[0])
"""


async def test_fixture_serves_a_real_room(loopback_server: LoopbackServer) -> None:
    room = rtc.Room()
    await room.connect(loopback_server.url, loopback_server.token("alice", room="demo"))
    try:
        async with api.LiveKitAPI(loopback_server.http_url, loopback_server.api_key, loopback_server.api_secret) as lk:
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room="demo"))
        assert [p.identity for p in listed.participants] == ["alice"]
    finally:
        await room.disconnect()


def test_fixture_in_auto_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini(_INI.format(mode="auto"))
    pytester.makepyfile(_USES_AND_CLOSES)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)


def test_fixture_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini(_INI.format(mode="strict"))
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_uses_the_server(loopback_server):
            assert loopback_server.rooms() == []
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)


def test_collection_survives_a_missing_aiortc(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = pytester.mkpydir("blocked") / "aiortc"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('aiortc is not installed')\n")
    monkeypatch.setenv("PYTHONPATH", str(blocker.parent))
    pytester.makeini(_INI.format(mode="auto"))
    pytester.makepyfile(
        """
        def test_without_the_server():
            pass

        async def test_with_the_server(loopback_server):
            pass
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ImportError: aiortc is not installed*"])
