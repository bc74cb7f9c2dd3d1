"""LiveKitServer itself: bad input gives a clear error and never hangs, nothing outlives it, its faults act."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from livekit import rtc

from rtcstack import RtcstackError, create_call
from rtcstack.testing import LiveKitServer
from tests.calls import expect, within
from tests.processes import gone, processes_with, script


def test_no_binary_anywhere_names_the_three_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIVEKIT_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RtcstackError, match=r"binary=.*\$LIVEKIT_SERVER_BIN.*PATH.*scripts/livekit-server"):
        LiveKitServer()


def test_a_binary_that_is_not_executable(tmp_path: Path) -> None:
    path = tmp_path / "livekit-server"
    path.write_text("not a program")
    with pytest.raises(RtcstackError, match="not an executable file"):
        LiveKitServer(path)


async def test_a_server_that_exits_at_start_is_a_clear_error(tmp_path: Path) -> None:
    server = LiveKitServer(script(tmp_path, 'echo "config rejected" >&2; exit 3'), log_dir=tmp_path)
    with pytest.raises(RtcstackError, match=r"(?s)exited at start with status 3.*config rejected"):
        await server.start()
    assert not server.running
    with pytest.raises(RuntimeError):
        server.url  # noqa: B018  (the proxy was closed too)


async def test_a_server_that_never_answers_is_stopped_after_the_start_timeout(tmp_path: Path) -> None:
    marker = f"rtcstack-silent-{os.getpid()}-{id(tmp_path)}"
    silent = script(tmp_path, f'export MARK="{marker}"; exec sleep 600')
    server = LiveKitServer(silent, log_dir=tmp_path, start_timeout=1.0)
    with pytest.raises(RtcstackError, match="did not answer within 1 s"):
        await within("start() giving up", server.start())
    assert processes_with(marker) == []


async def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LiveKitServer(port=port)
        with pytest.raises(RtcstackError, match=f"cannot listen on 127.0.0.1:{port}"):
            await server.start()


async def test_close_leaves_no_process_and_no_listener(tmp_path: Path) -> None:
    server = LiveKitServer(log_dir=tmp_path)
    await server.start()
    (pid,) = processes_with(server.api_secret)  # its config, with the keys, is in its environment
    assert server.log_path.is_file() and "starting LiveKit server" in server.log_path.read_text()
    url = server.url
    await server.close()
    assert gone(pid)
    room = rtc.Room()
    with pytest.raises(rtc.ConnectError):
        await room.connect(url, server.token("alice", room="demo"), rtc.RoomOptions(connect_timeout=2))


async def test_a_cancelled_start_leaves_no_process(tmp_path: Path) -> None:
    marker = f"rtcstack-cancelled-{os.getpid()}-{id(tmp_path)}"
    server = LiveKitServer(script(tmp_path, f'export MARK="{marker}"; exec sleep 600'), log_dir=tmp_path)
    starting = asyncio.ensure_future(server.start())
    await asyncio.sleep(0.3)  # the process is up and being waited for
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert processes_with(marker) == []


async def test_faults_of_the_real_server(tmp_path: Path) -> None:
    async with LiveKitServer(log_dir=tmp_path) as server:
        with pytest.raises(LookupError):
            await server.drop_signal("nobody")
        with pytest.raises(ValueError):
            server.refuse_joins(count=1, status=200)
        async with create_call(server.url, server.token("alice", room="demo")) as call:
            server.refuse_joins(count=1, status=401, identity="alice")
            refused = create_call(server.url, server.token("alice", room="demo"))
            with pytest.raises(RtcstackError):
                await refused.connect()
            back = expect(call, "reconnected")
            await server.restart()  # same ports: the SDK's own reconnect finds the server again
            await back
            ended = expect(call, "disconnected")
            await server.leave("alice")
            assert (await ended).reason == "participant_removed"
        await server.kill()
        assert not server.running
        room = rtc.Room()
        with pytest.raises(rtc.ConnectError):
            await room.connect(server.url, server.token("bob", room="demo"), rtc.RoomOptions(connect_timeout=2))
