"""Every example runs against LoopbackServer with the real SDK and does what its docstring says."""

from __future__ import annotations

import asyncio
import importlib.util
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web
from livekit import rtc

from rtcstack import Call, create_call
from rtcstack.testing import LoopbackServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WAIT = 15.0
STAY = 60.0
"""How long an example stays in its call unless it ends: far more than any wait here, so an example that
returns did so because its call ended."""


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Output:
    """Accumulates what the example printed (capsys hands out each chunk once)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def read(self) -> str:
        self.text += self.capsys.readouterr().out
        return self.text

    async def wait_for(self, predicate: Callable[[str], bool]) -> str:
        async def poll() -> str:
            while not predicate(self.read()):  # noqa: ASYNC110  (stdout has no event to wait on)
                await asyncio.sleep(0.02)
            return self.text

        try:
            return await asyncio.wait_for(poll(), WAIT)
        except asyncio.TimeoutError:
            pytest.fail(f"the example did not print what was expected within {WAIT} s; it printed {self.text!r}")


@pytest.fixture
def out(capsys: pytest.CaptureFixture[str]) -> Output:
    return Output(capsys)


class Example:
    """One example's `main` running as a task, with the call it made (its `create_call` is wrapped to keep it)."""

    def __init__(self, name: str, *args: Any) -> None:
        module = load(name)
        self.calls: list[Call] = []

        def keep(*call_args: Any, **kw: Any) -> Call:
            call: Call = create_call(*call_args, **kw)
            self.calls.append(call)
            return call

        module.create_call = keep
        self.task: asyncio.Task[Any] = asyncio.ensure_future(module.main(*args, stay=STAY))

    async def ended(self) -> str | None:
        """Wait for the example to return (well before its STAY runs out) and give why its call ended."""
        try:
            await asyncio.wait_for(self.task, WAIT)
        except asyncio.TimeoutError:
            pytest.fail(f"the example did not end within {WAIT} s")
        assert len(self.calls) == 1
        return self.calls[0].disconnect_reason


@pytest.fixture
async def run_example() -> AsyncIterator[Callable[..., Example]]:
    examples: list[Example] = []

    def start(name: str, *args: Any) -> Example:
        example = Example(name, *args)
        examples.append(example)
        return example

    yield start
    for example in examples:
        if not example.task.done():
            example.task.cancel()
    await asyncio.gather(*(e.task for e in examples), return_exceptions=True)


async def test_reconnect_banner(server: LoopbackServer, run_example: Any, out: Output) -> None:
    example = run_example("reconnect_banner", server.url, server.token("viewer", room="demo"))
    await out.wait_for(lambda text: "connected to viewer" in text)
    await server.drop_signal("viewer")
    await out.wait_for(lambda text: "[ok] back online" in text)
    await server.delete_room("demo")
    assert await example.ended() == "room_deleted"
    text = out.read()
    assert "reconnecting (attempt 1)" in text
    assert text.index("reconnecting (attempt 1)") < text.index("[ok] back online")
    assert "[x] call ended: room_deleted" in text


async def test_stall_banner(server: LoopbackServer, run_example: Any, out: Output) -> None:
    """The banner goes up when the server stops forwarding bob's audio and down when it forwards again; after a
    signal drop, the line that every track flows again."""
    await server.add_participant("demo", "bob", name="Bob", audio="tone:440")
    example = run_example("stall_banner", server.url, server.token("viewer", room="demo"))
    await out.wait_for(lambda text: "connected, watching the media of Bob" in text)
    await server.stall_media("bob", "microphone")
    await out.wait_for(lambda text: "[!] Bob's audio is interrupted (no_packets)" in text)
    await server.resume_media("bob", "microphone")
    await out.wait_for(lambda text: "[ok] Bob's audio is back after " in text)
    await server.drop_signal("viewer")
    await out.wait_for(lambda text: "[ok] every track flows again, " in text)
    await server.delete_room("demo")
    assert await example.ended() == "room_deleted"
    lines = out.read().splitlines()
    assert [line.split(" is ")[0] for line in lines[1:3]] == ["[!] Bob's audio", "[ok] Bob's audio"]


@pytest.mark.parametrize("server", [{"token_refresh": False}], indirect=True)
async def test_http_refresher(server: LoopbackServer, run_example: Any, out: Output) -> None:
    hits: list[dict[str, Any]] = []

    async def issue(request: web.Request) -> web.Response:
        hits.append({"body": await request.json(), "app": request.headers.get("X-App")})
        return web.json_response({"token": server.token("viewer", room="demo", ttl=600)})

    app = web.Application()
    app.router.add_post("/livekit-token", issue)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        first = server.token("viewer", room="demo", ttl=62)  # enters the 60 s refresh margin 2 s after joining
        example = run_example("http_refresher", server.url, first, f"http://127.0.0.1:{port}/livekit-token")
        await out.wait_for(lambda text: "fresh token, valid until" in text)
        await server.delete_room("demo")
        assert await example.ended() == "room_deleted"
    finally:
        await runner.cleanup()
    assert hits and hits[0] == {"body": {"room": "demo"}, "app": "example"}
    assert "could not refresh" not in out.read()


async def test_quality_monitor(server: LoopbackServer, run_example: Any, out: Output) -> None:
    # the agent is there first, so the viewer knows it from its join (a later joiner who publishes nothing is
    # announced in the server's next batch, and a quality update about someone unknown is dropped by the SDK)
    await server.add_participant("demo", "agent", kind="agent")
    example = run_example("quality_monitor", server.url, server.token("viewer", room="demo"))
    await out.wait_for(lambda _: server.participants("demo") == ["agent", "viewer"])
    await server.set_connection_quality("viewer", "poor")
    await server.set_connection_quality("agent", "excellent")
    await out.wait_for(lambda text: "viewer (you): poor" in text and "agent: excellent" in text)
    await server.delete_room("demo")
    assert await example.ended() == "room_deleted"
    assert out.read().splitlines() == ["●○○ viewer (you): poor", "●●● agent: excellent"]


async def test_bot(server: LoopbackServer, run_example: Any, out: Output) -> None:
    example = run_example("bot", server.url, server.token("bot", room="demo"))
    await out.wait_for(lambda text: "bot online with 0 others" in text)
    carol = rtc.Room()
    received: asyncio.Queue[bytes] = asyncio.Queue()
    carol.on("data_received", lambda packet: received.put_nowait(packet.data))
    try:
        await carol.connect(server.url, server.token("carol", room="demo", name="Carol"))
        assert await asyncio.wait_for(received.get(), WAIT) == b"hello Carol"
        await carol.local_participant.publish_data("ping", topic="chat")
        assert await asyncio.wait_for(received.get(), WAIT) == b"pong"
    finally:
        await carol.disconnect()
    await server.delete_room("demo")
    assert await example.ended() == "room_deleted"


async def test_echo_bot(server: LoopbackServer, run_example: Any, out: Output) -> None:
    """The bot echoes a synthetic caller's tone; a listener hears it before and after the bot's call rejoins."""
    await server.add_participant("demo", "caller", audio="tone:440")
    example = run_example("echo_bot", server.url, server.token("bot", room="demo"), "caller")
    await out.wait_for(lambda text: text.count("echo track published as") == 1)
    ear = rtc.Room()
    try:
        await ear.connect(server.url, server.token("ear", room="demo"))
        assert await loudness(ear, "bot") > 1000
        await server.leave("bot", reason="server_shutdown")  # the SDK does not resume: the call rejoins
        await out.wait_for(lambda text: text.count("echo track published as") == 2)
        assert await loudness(ear, "bot", out.text.split()[-1]) > 1000
    finally:
        await ear.disconnect()
    await server.remove_participant("demo", "caller")
    await out.wait_for(lambda text: "stopped echoing caller" in text)
    await server.delete_room("demo")
    assert await example.ended() == "room_deleted"


async def loudness(room: rtc.Room, identity: str, sid: str | None = None) -> float:
    """RMS level of 50 frames of ``identity``'s track (``sid``, or any) as ``room`` receives it."""

    def subscribed() -> rtc.Track | None:
        participant = room.remote_participants.get(identity)
        for publication in participant.track_publications.values() if participant else ():
            if publication.track is not None and sid in (None, publication.sid):
                return publication.track
        return None

    async def take() -> list[int]:
        while (track := subscribed()) is None:  # noqa: ASYNC110  (SDK state has no event to wait on)
            await asyncio.sleep(0.05)
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
        samples: list[int] = []
        try:
            async for event in stream:
                samples.extend(event.frame.data)
                if len(samples) >= 50 * 480:
                    return samples[25 * 480 :]
        finally:
            await stream.aclose()
        return samples

    samples = await asyncio.wait_for(take(), WAIT)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))
