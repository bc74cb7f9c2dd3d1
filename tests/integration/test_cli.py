"""The `rtcstack` command line as a user runs it: subprocesses against a LoopbackServer (the real SDK inside them).

Run inside the network namespace of ``scripts/test``; the demo then sees ``RTCSTACK_NETNS`` and does not unshare again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import struct
import sys
import termios
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import jwt
import pytest

from rtcstack import create_call
from rtcstack.testing import LoopbackServer

WAIT = 20.0
"""Upper bound for one expected line of output (never reached when things work)."""
JWT = re.compile(rb"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_") and k not in ("NO_COLOR", "TERM")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Cli:
    """A running ``python -m rtcstack ...`` with its stdout read line by line and stderr kept."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[bytes] = []

    async def line(self, predicate: Callable[[bytes], bool], timeout: float = WAIT) -> bytes:
        """The next stdout line that satisfies ``predicate`` (earlier ones are kept in ``lines``)."""
        stdout = self.proc.stdout
        assert stdout is not None

        async def scan() -> bytes:
            while True:
                raw = await stdout.readline()
                if not raw:
                    raise AssertionError(f"stdout ended; saw {self.lines!r}")
                self.lines.append(raw)
                if predicate(raw):
                    return raw

        return await asyncio.wait_for(scan(), timeout)

    async def finish(self, timeout: float = WAIT) -> tuple[int, bytes, bytes]:
        """Wait for the exit: (status, the rest of stdout appended to what was read, stderr)."""
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode, b"".join(self.lines) + out, err


Start = Callable[..., Awaitable[Cli]]
"""``await cli("watch", url, ..., env=...)``."""


@pytest.fixture
async def cli() -> AsyncIterator[Start]:
    """``await cli("watch", url, ..., env=...)``: a started command; killed at teardown if still running."""
    running: list[Cli] = []

    async def start(*args: str, env: dict[str, str] | None = None) -> Cli:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rtcstack",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env or cli_env(),
        )
        running.append(Cli(proc))
        return running[-1]

    yield start
    for item in running:
        if item.proc.returncode is None:
            item.proc.kill()
            await item.proc.communicate()


def credentials(server: LoopbackServer) -> dict[str, str]:
    return cli_env(LIVEKIT_API_KEY=server.api_key, LIVEKIT_API_SECRET=server.api_secret)


@pytest.fixture
def unreachable_port() -> Iterator[int]:
    """A port bound for the test's duration but not listening: connects to it are refused, and nothing else can
    take it meanwhile (a port closed and reused could be)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


# -- token --------------------------------------------------------------------------------------------------------


async def test_token_is_accepted_by_the_server(server: LoopbackServer, cli: Start) -> None:
    minted = await cli("token", "--room", "demo", "--identity", "alice", "--ttl", "120", env=credentials(server))
    status, out, err = await minted.finish()
    assert (status, err) == (0, b"")
    token = out.decode().strip()
    claims = jwt.decode(token, server.api_secret, algorithms=["HS256"], issuer=server.api_key)
    assert (claims["sub"], claims["video"]["room"], claims["video"]["roomJoin"]) == ("alice", "demo", True)
    call = create_call(server.url, token)
    await call.connect(timeout=WAIT)
    assert server.participants("demo") == ["alice"]
    await call.disconnect()


# -- demo ---------------------------------------------------------------------------------------------------------


async def test_demo_plays_every_step_of_the_story(cli: Start) -> None:
    assert os.environ.get("RTCSTACK_NETNS"), "run the integration suite with scripts/test (a private netns)"
    demo = await cli("demo", "--plain", env=cli_env(RTCSTACK_NETNS=os.environ["RTCSTACK_NETNS"]))
    status, out, err = await demo.finish(timeout=90)
    text = out.decode()
    assert status == 0, text + err.decode()
    assert err == b""
    stories = [m.group(1) for m in re.finditer(r"^ *\d+\.\d\ds  (.*)$", text, re.M)]
    for expected in (
        "connected",
        "+ agent joined (agent)",
        "== a. quality drop",
        "quality alice (you): poor",
        "quality agent: poor",
        "== b. a participant joins and leaves",
        "+ bob joined",
        "- bob left",
        "== c. signal drop and resume",
        "reconnecting (attempt 1)",
        "reconnected",
        "== d. token expiry, refresh and rejoin",
        "== e. the agent's audio stalls and resumes",
        "agent's microphone stalled (no packets)",
        "== f. room deleted",
        "disconnected (room_deleted)",
    ):
        assert expected in stories, expected
    assert any(s.startswith("token expiring (") for s in stories)
    assert any(s.startswith("token refreshed (") for s in stories)
    for key, label in (
        ("a", "quality drop"),
        ("b", "a participant joins and leaves"),
        ("c", "signal drop and resume"),
        ("d", "token expiry, refresh and rejoin"),
        ("e", "the agent's audio stalls and resumes"),
        ("f", "room deleted"),
    ):
        assert any(s.startswith(f"ok {key}. {label}: ") for s in stories), key
        assert re.search(rf"^  ok    {key}\. {re.escape(label)} ", text, re.M), key
    assert text.endswith(" s\n")
    assert "all 6 steps passed in " in text.splitlines()[-1]
    assert any(s.startswith("agent's microphone resumed after ") for s in stories)
    assert any(re.fullmatch(r"media restored \d+\.\d s after the reconnect", s) for s in stories)
    stall = next(s for s in stories if s.startswith("ok e. "))
    assert re.search(r"agent's microphone stalled \(no packets\) and resumed after \d+\.\d s$", stall), stall
    rejoin = next(s for s in stories if s.startswith("ok d. "))
    assert "rejoined with a fresh Room (the server allowed no resume), with " in rejoin, rejoin
    assert "attempt" not in rejoin, "attempt 1 is the SDK's own resume in the README's words"
    assert not JWT.search(out)


# -- watch --------------------------------------------------------------------------------------------------------


async def test_watch_json_prints_one_object_per_event(server: LoopbackServer, cli: Start) -> None:
    await server.add_participant("demo", "agent", name="Agent", kind="agent")
    watch = await cli("watch", server.url, "--room", "demo", "--identity", "watcher", "--json", env=credentials(server))
    connected = json.loads(await watch.line(lambda raw: b'"event":"connected"' in raw))
    assert connected == {
        "event": "connected",
        "identity": "watcher",
        "participants": [{"identity": "agent", "kind": "agent", "quality": "unknown"}],
    }
    await server.set_connection_quality("watcher", "poor")
    await watch.line(lambda raw: b'"quality":"poor"' in raw)
    await server.set_connection_quality("agent", "lost")
    await watch.line(lambda raw: b'"quality":"lost"' in raw)
    await server.add_participant("demo", "bob")
    await watch.line(lambda raw: b'"participant_joined"' in raw)
    await server.remove_participant("demo", "bob")
    await watch.line(lambda raw: b'"participant_left"' in raw)
    await server.leave("watcher", reason="participant_removed")
    status, out, err = await watch.finish()
    assert (status, err) == (0, b"")
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0] == {"event": "state_changed", "state": "connecting", "previous": "idle"}
    assert {"event": "connection_quality_changed", "identity": "watcher", "local": True, "quality": "poor"} in records
    assert {"event": "connection_quality_changed", "identity": "agent", "quality": "lost"} in records
    assert {"event": "participant_joined", "identity": "bob", "kind": "standard"} in records
    assert {"event": "participant_left", "identity": "bob"} in records
    assert records[-2:] == [
        {"event": "state_changed", "state": "disconnected", "previous": "connected"},
        {"event": "disconnected", "reason": "participant_removed"},
    ]
    assert server.participants("demo") == ["agent"]


async def test_watch_json_tells_a_stall_and_its_resumption(server: LoopbackServer, cli: Start) -> None:
    await server.add_participant("demo", "bob", audio="tone:440")
    watch = await cli("watch", server.url, "--room", "demo", "--identity", "watcher", "--json", env=credentials(server))
    await watch.line(lambda raw: b'"event":"track_subscribed"' in raw)
    await server.stall_media("bob", "microphone")
    stalled = json.loads(await watch.line(lambda raw: b'"event":"track_stalled"' in raw))
    assert (stalled["identity"], stalled["reason"], stalled["track"]["source"]) == ("bob", "no_packets", "microphone")
    await server.resume_media("bob", "microphone")
    resumed = json.loads(await watch.line(lambda raw: b'"event":"track_resumed"' in raw))
    assert resumed["identity"] == "bob" and resumed["stalled_for"] > 0
    await server.leave("watcher", reason="participant_removed")
    status, _, err = await watch.finish()
    assert (status, err) == (0, b"")


async def test_watch_with_a_token_never_prints_it(server: LoopbackServer, cli: Start) -> None:
    token = server.token("viewer", room="lobby")
    watch = await cli("watch", server.url + "/?access_token=" + token, "--token", token, "--plain", env=cli_env())
    await watch.line(lambda raw: raw.endswith(b"  connected\n"))
    await server.delete_room("lobby")
    status, out, err = await watch.finish()
    assert (status, err) == (0, b"")
    assert out.endswith(b"  disconnected (room_deleted)\n")
    assert token.encode() not in out + err
    assert not JWT.search(out + err)


async def test_watch_ctrl_c_disconnects_cleanly(server: LoopbackServer, cli: Start) -> None:
    observer = create_call(server.url, server.token("observer", room="demo"))
    await observer.connect(timeout=WAIT)
    joined = asyncio.ensure_future(observer.wait_for("participant_joined", timeout=WAIT))
    watch = await cli("watch", server.url, "--room", "demo", "--identity", "w", "--plain", env=credentials(server))
    await watch.line(lambda raw: raw.endswith(b"  connected\n"))
    assert (await joined).participant is not None
    left = asyncio.ensure_future(observer.wait_for("participant_left", timeout=WAIT))
    watch.proc.send_signal(signal.SIGINT)
    status, out, err = await watch.finish()
    assert (status, err) == (0, b"")
    assert out.endswith(b"  disconnected (client_initiated)\n")
    gone = (await left).participant
    assert gone is not None
    assert gone.identity == "w"
    assert server.participants("demo") == ["observer"]
    await observer.disconnect()


async def test_watch_fails_in_one_line_when_the_server_is_unreachable(cli: Start, unreachable_port: int) -> None:
    env = cli_env(LIVEKIT_API_KEY="devkey", LIVEKIT_API_SECRET="x" * 32)
    watch = await cli("watch", f"ws://127.0.0.1:{unreachable_port}", "--room", "r", "--identity", "i", env=env)
    status, _, err = await watch.finish()
    assert status == 1
    assert err.count(b"\n") == 1
    assert err.startswith(b"rtcstack: error: could not connect to ws://127.0.0.1:")
    assert b"Traceback" not in err


async def test_watch_fails_in_one_line_when_the_server_rejects_the_token(server: LoopbackServer, cli: Start) -> None:
    env = cli_env(LIVEKIT_API_KEY=server.api_key, LIVEKIT_API_SECRET="not-the-server-secret-" + "y" * 16)
    watch = await cli("watch", server.url, "--room", "r", "--identity", "i", "--plain", env=env)
    status, out, err = await watch.finish()
    assert status == 1
    assert err.count(b"\n") == 1
    assert err.startswith(b"rtcstack: error: could not connect to " + server.url.encode() + b": ")
    assert b"auth_rejected" in err
    assert out.endswith(b"  disconnected (auth_rejected)\n")


class Pty:
    """The master side of a pseudo-terminal: everything the child wrote, and a way to wait for some text."""

    def __init__(self, rows: int = 40, cols: int = 120) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.data = bytearray()
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed its side
            chunk = b""
        if not chunk:
            self._loop.remove_reader(self.master)
        self.data += chunk
        self._changed.set()

    def screen_text(self) -> bytes:
        return ANSI.sub(b"", bytes(self.data))

    async def wait_text(self, text: bytes, *, after: int = 0, timeout: float = WAIT) -> int:
        """Wait until ``text`` appears in the output (escape codes removed) after offset ``after``; its offset."""

        async def scan() -> int:
            while (found := self.screen_text().find(text, after)) < 0:
                self._changed.clear()
                await self._changed.wait()
            return found

        return await asyncio.wait_for(scan(), timeout)

    def close(self) -> None:
        self._loop.remove_reader(self.master)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


async def test_watch_on_a_terminal_shows_the_reconnect_banner_during_a_signal_drop(server: LoopbackServer) -> None:
    await server.add_participant("demo", "agent", kind="agent")
    terminal = Pty()
    env = credentials(server)
    env.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "rtcstack", "watch", server.url, "--room", "demo", "--identity", "alice"),
        stdin=terminal.slave,
        stdout=terminal.slave,
        stderr=terminal.slave,
        env=env,
    )
    os.close(terminal.slave)
    try:
        at = await terminal.wait_text(b"state  CONNECTED")
        await terminal.wait_text(b"  agent        agent", after=at)
        assert b"RECONNECTING" not in terminal.screen_text()
        await server.set_connection_quality("agent", "poor")
        at = await terminal.wait_text(b"quality agent: poor", after=at)
        await server.drop_signal("alice")
        at = await terminal.wait_text(b" RECONNECTING (attempt 1) ", after=at)
        at = await terminal.wait_text(b"state  CONNECTED", after=at)
        await terminal.wait_text(b"reconnected", after=at)
        await server.delete_room("demo")
        at = await terminal.wait_text(b" CALL ENDED: room_deleted ", after=at)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
        with contextlib.suppress(asyncio.TimeoutError):
            await terminal.wait_text(b"never", after=at, timeout=0.2)  # drain the last redraw
        raw = bytes(terminal.data)
        assert b"\x1b[?25l" in raw
        assert raw.endswith(b"\x1b[?25h")
        assert re.search(rb"\x1b\[\d+F\x1b\[J", raw), "the panel is redrawn in place"
        assert b"Traceback" not in raw
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        terminal.close()


# -- serve --------------------------------------------------------------------------------------------------------


async def test_serve_runs_until_sigterm_and_a_call_connects_to_it(cli: Start) -> None:
    secret = "a-secret-for-the-serve-test-of-32-bytes"
    serve = await cli("serve", "--port", "0", "--api-secret", secret, "--no-token-refresh")
    url = (await serve.line(lambda raw: raw.startswith(b"  url:"))).decode().split()[-1]
    assert re.fullmatch(r"ws://127\.0\.0\.1:\d+", url)
    await serve.line(lambda raw: raw.startswith(b"press Ctrl-C"))
    printed = b"".join(serve.lines).decode()
    assert "  api key:       devkey\n" in printed
    assert f"  api secret:    {secret}\n" in printed
    assert "  token refresh: off\n" in printed
    minted = await cli("token", "--room", "demo", "--identity", "alice", "--api-key", "devkey", "--api-secret", secret)
    _, token, _ = await minted.finish()
    call = create_call(url, token.decode().strip())
    await call.connect(timeout=WAIT)
    assert call.connection_state == "connected"
    rejoining = asyncio.ensure_future(call.wait_for("reconnecting", timeout=WAIT))  # server_shutdown is transient
    serve.proc.send_signal(signal.SIGTERM)
    assert (await rejoining).attempt == 1
    status, _, err = await serve.finish()
    assert (status, err) == (0, b"stopping\n")
    await call.disconnect()


async def test_serve_on_a_port_in_use_fails_in_one_line(server: LoopbackServer, cli: Start) -> None:
    port = server.url.rsplit(":", 1)[1]
    serve = await cli("serve", "--port", port)
    status, out, err = await serve.finish()
    assert (status, out) == (1, b"")
    assert err == f"rtcstack: error: cannot listen on 127.0.0.1:{port}: the port is already in use\n".encode()
