"""Every code block of README.md runs here as printed, so the README cannot drift from what works.

Python blocks are told apart by what they define (see `kind_of`); each kind has its runner, and a block of no known
kind fails `test_every_python_block_of_the_readme_is_run_here`. Blocks that are fragments (the media one uses a
`call`, a `track` and a `source`, the health one a `call`) run with those names bound; the README's tests run with
pytest in a fresh project made of its `pyproject.toml` block and a tiny bot where it says "your app".
"""

from __future__ import annotations

import ast
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from livekit import rtc

from rtcstack import Call, TrackInfo
from rtcstack.testing import LoopbackServer
from tests.calls import CallFactory, expect, until, within

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parents[2] / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
KINDS = ("quickstart", "logging", "media", "tests", "caller", "health")


def blocks(language: str) -> list[str]:
    return [m.group(2) for m in _FENCE.finditer(README.read_text()) if m.group(1) == language]


def kind_of(block: str) -> str:
    if "async def test_" in block:
        return "tests"
    if 'if __name__ == "__main__":' in block:
        return "quickstart"
    if "async def caller(" in block:
        return "caller"
    if 'getLogger("livekit")' in block:
        return "logging"
    if "call.audio_stream(" in block:
        return "media"
    if '@call.on("track_stalled")' in block:
        return "health"
    return "unknown"


def of_kind(kind: str) -> list[str]:
    found = [block for block in blocks("python") if kind_of(block) == kind]
    assert found, f"the README has no {kind} block"
    return found


def run(block: str, namespace: dict[str, Any]) -> Any:
    """Run a block in ``namespace``; a coroutine to await when it awaits at top level, else None."""
    code = compile(block, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    return eval(code, namespace)


def test_every_python_block_of_the_readme_is_run_here() -> None:
    kinds = [kind_of(block) for block in blocks("python")]
    assert "unknown" not in kinds, [b for b in blocks("python") if kind_of(b) == "unknown"]
    assert set(kinds) == set(KINDS)


async def test_quickstart(server: LoopbackServer, capsys: pytest.CaptureFixture[str]) -> None:
    (block,) = of_kind("quickstart")
    namespace: dict[str, Any] = {"__name__": "readme"}
    run(block, namespace)
    made: list[Call] = []
    create = namespace["create_call"]
    namespace["create_call"] = lambda *args, **kwargs: made.append(create(*args, **kwargs)) or made[-1]
    printed: list[str] = []

    def shown(line: str) -> bool:
        printed.extend(capsys.readouterr().out.splitlines())
        return line in printed

    await server.add_participant("demo", "agent")
    main = asyncio.ensure_future(namespace["main"](server.url, server.token("alice", room="demo")))
    await until(lambda: shown("alice connected ['agent']"), "the quickstart printing its state")
    (call,) = made
    back = expect(call, "reconnected")
    await server.drop_signal("alice")
    await until(lambda: shown("reconnecting (attempt 1)"), "the quickstart printing the SDK's resume")
    await back  # a room deleted while the call resumes is joined anew, as on LiveKit: delete it once it is back
    await server.delete_room("demo")
    await within("the quickstart's main returning as the call ended", main)
    assert shown("call ended: room_deleted"), printed


async def test_media_block_echoes_what_bob_says(server: LoopbackServer, make_call: CallFactory) -> None:
    """The fragment publishes `track` and feeds bob's frames to `source`, the track's source: an echo."""
    (block,) = of_kind("media")
    await server.add_participant("demo", "bob", audio="tone:440")
    call = make_call("alice")
    await call.connect()
    source = rtc.AudioSource(48000, 1)
    namespace: dict[str, Any] = {
        "rtc": rtc,
        "call": call,
        "track": rtc.LocalAudioTrack.create_audio_track("echo", source),
        "source": source,
    }
    fragment = asyncio.ensure_future(run(block, namespace))
    hearing = asyncio.ensure_future(server.wait_heard("alice", timeout=15))
    await asyncio.wait({fragment, hearing}, return_when=asyncio.FIRST_COMPLETED)
    if fragment.done():  # it failed before the echo was heard: its error says why
        hearing.cancel()
        fragment.result()
    heard = await hearing
    assert isinstance(namespace["info"], TrackInfo) and heard.track_sid == namespace["info"].sid
    await server.remove_participant("demo", "bob")
    await within("the fragment's loop ending as bob left", fragment)
    await source.aclose()


async def test_health_block_shows_the_banner_while_bob_is_stalled(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    """The fragment's handlers put up "Bob's audio is interrupted" when the server stops forwarding bob's tone, and
    take it down when it forwards again."""
    (block,) = of_kind("health")
    await server.add_participant("demo", "bob", name="Bob", audio="tone:440")
    call = make_call("alice")
    await call.connect()
    namespace: dict[str, Any] = {"call": call}
    run(block, namespace)
    banners: dict[str, str] = namespace["banners"]
    stalled = expect(call, "track_stalled")
    await server.stall_media("bob", "microphone")
    track = (await stalled).track
    assert track is not None and banners == {track.sid: "Bob's audio is interrupted"}
    resumed = expect(call, "track_resumed")
    await server.resume_media("bob", "microphone")
    await resumed
    assert banners == {}


async def test_caller_block_is_heard(server: LoopbackServer) -> None:
    (block,) = of_kind("caller")
    namespace: dict[str, Any] = {}
    run(block, namespace)
    caller = asyncio.ensure_future(namespace["caller"](server.url, server.token("carol", room="demo")))
    heard = await server.wait_heard("carol", timeout=15)
    assert (heard.kind, heard.source) == ("audio", "microphone")
    await server.delete_room("demo")
    await within("the caller returning as its call ended", caller)


_RESUME_ONCE = """
import asyncio

from rtcstack import create_call
from rtcstack.testing import LoopbackServer


async def resume_once() -> None:
    async with LoopbackServer() as server:
        async with create_call(server.url, server.token("alice", room="demo")) as call:
            back = asyncio.ensure_future(call.wait_for("reconnected", timeout=15))
            await server.drop_signal("alice")
            await back
    print("resumed")


asyncio.run(resume_once())
"""


async def _stderr_of(script: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await within("the script's end", proc.communicate(), timeout=60)
    assert (proc.returncode, out) == (0, b"resumed\n"), err.decode()
    return err.decode()


async def test_logging_block_quiets_the_sdk_log_lines() -> None:
    """Without the block, a resume prints the SDK's Rust lines on stderr; with it, nothing."""
    (block,) = of_kind("logging")
    assert "resuming connection... attempt: 1" in await _stderr_of(_RESUME_ONCE)
    assert await _stderr_of(block + _RESUME_ONCE) == ""


TINY_BOT = '''
"""Where the README says "your app": joins the call, answers with a tone, returns when the call ends."""
from livekit import rtc

from rtcstack import create_call
from rtcstack.testing import audio_track


async def run(url: str, token: str) -> None:
    async with create_call(url, token) as call, audio_track("tone:330") as track:
        await call.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        await call.wait_for("disconnected")
'''


def test_readme_tests_pass_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    """The README's pytest configuration and tests, as a user copies them, with warnings as errors."""
    (config,) = blocks("toml")
    tests = of_kind("tests")
    pytester.makefile(".toml", pyproject=config)
    pytester.makepyfile(my_bot=TINY_BOT, **{f"test_readme_{i}": test for i, test in enumerate(tests)})

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")

    result.assert_outcomes(passed=sum(test.count("async def test_") for test in tests))
