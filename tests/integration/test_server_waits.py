"""LoopbackServer's waits for a user's test (`wait_joined`, `wait_heard`), what `received()` says of someone not
there, and `rtcstack.testing.audio_track` heard by the server: the real SDK on the client side."""

from __future__ import annotations

import array
import asyncio
import math
import re
import wave
from pathlib import Path

import pytest
from livekit import rtc

from rtcstack import ConfigError
from rtcstack.testing import LoopbackServer, ReceivedTrack, audio_track
from tests.calls import CallFactory, expect, within


async def test_wait_joined_returns_when_the_participant_joins(server: LoopbackServer, make_call: CallFactory) -> None:
    waiting = asyncio.ensure_future(server.wait_joined("bot", timeout=15))
    await asyncio.sleep(0)  # the wait is pending before anyone joins
    assert not waiting.done()
    await make_call("bot").connect()
    await within("wait_joined", waiting)
    assert "bot" in server.participants("demo")
    await server.wait_joined("bot", timeout=15)  # already there: at once


async def test_wait_joined_times_out_naming_who_is_there(server: LoopbackServer) -> None:
    with pytest.raises(TimeoutError, match=r"^'bot' did not join within 0\.2 s; no room is open$"):
        await server.wait_joined("bot", timeout=0.2)
    await server.add_participant("demo", "caller")
    with pytest.raises(TimeoutError, match=r"^'bot' did not join within 0\.2 s; in the rooms: demo: caller$"):
        await server.wait_joined("bot", timeout=0.2)


async def test_received_of_someone_not_there_is_a_lookup_error_that_says_how_to_wait(server: LoopbackServer) -> None:
    with pytest.raises(LookupError, match=r"no participant 'bot' \(not joined yet, or gone\): wait_joined\(\) waits"):
        server.received("bot")
    await server.add_participant("demo", "bot")
    assert server.received("bot") == []  # there, publishing nothing


async def test_wait_heard_hears_an_audio_track_a_call_publishes(server: LoopbackServer, make_call: CallFactory) -> None:
    call = make_call("bot")
    heard = asyncio.ensure_future(server.wait_heard("bot", frames=50, min_dbfs=-50, timeout=15))
    await call.connect()
    async with audio_track("tone:440") as track:
        info = await call.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        got = await within("wait_heard", heard)
    assert isinstance(got, ReceivedTrack)
    assert (got.track_sid, got.kind, got.source) == (info.sid, "audio", "microphone")
    assert got.frames >= 50 and got.audio_level_dbfs is not None and got.audio_level_dbfs >= -50


def _write_wav(path: Path, rate: int, amplitude: float, seconds: float = 0.5) -> Path:
    samples = array.array(
        "h", (int(amplitude * 32767 * math.sin(2 * math.pi * 300 * i / rate)) for i in range(int(rate * seconds)))
    )
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return path


async def test_audio_track_plays_a_wav_file_the_server_hears(
    server: LoopbackServer, make_call: CallFactory, tmp_path: Path
) -> None:
    """A 16 kHz file, shorter than a second: resampled, looped, heard."""
    call = make_call("bot")
    await call.connect()
    async with audio_track(str(_write_wav(tmp_path / "hello.wav", 16000, 0.5)), name="hello") as track:
        await call.publish_track(track)
        got = await server.wait_heard("bot", frames=50, timeout=15)
    assert got.audio_level_dbfs is not None and got.audio_level_dbfs >= -50


async def test_wait_heard_times_out_saying_what_the_server_got(server: LoopbackServer, tmp_path: Path) -> None:
    missed = r"^'bot' was not heard within 0\.3 s \(50 frames at -50 dBFS or more\)"
    with pytest.raises(TimeoutError, match=missed + r": it is in no room; no room is open$"):
        await server.wait_heard("bot", timeout=0.3)
    await server.add_participant("demo", "bot")
    with pytest.raises(TimeoutError, match=missed + r": it publishes no audio track$"):
        await server.wait_heard("bot", timeout=0.3)
    await server.remove_participant("demo", "bot")
    await server.add_participant("demo", "bot", audio=str(_write_wav(tmp_path / "silence.wav", 48000, 0.0)))
    await server.wait_heard("bot", frames=5, min_dbfs=-127, timeout=15)  # it plays: frames arrive, silent
    with pytest.raises(TimeoutError, match=missed + r"; its audio: microphone TR_\w+: \d+ frames, -127\.0 dBFS$"):
        await server.wait_heard("bot", timeout=0.3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": 0}, "frames must be an int >= 1, not 0"),
        ({"frames": 2.5}, "frames must be an int >= 1, not 2.5"),
        ({"min_dbfs": 3}, "min_dbfs must be a level between -127 and 0 dBFS, not 3"),
        ({"timeout": 0}, "timeout must be a positive, finite number of seconds or None, not 0"),
    ],
)
async def test_wait_heard_refuses_bad_arguments(server: LoopbackServer, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        await server.wait_heard("bot", **kwargs)  # type: ignore[arg-type]  # some deliberately of the wrong type


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tone:abc", "bad tone 'tone:abc': expected tone:<frequency in Hz>"),
        ("tone:30000", "bad tone 'tone:30000': the frequency must be between 0 and 24000 Hz"),
        ("/no/such.wav", "cannot read '/no/such.wav' as a WAV file"),
        (440, "spec must be 'tone:<hz>' or a WAV file path, not int"),
    ],
)
async def test_audio_track_refuses_a_bad_spec_with_a_config_error(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        async with audio_track(spec):  # type: ignore[arg-type]  # some deliberately of the wrong type
            pass


async def test_received_counts_are_per_track_across_a_resume_and_a_restart(
    server: LoopbackServer, make_call: CallFactory
) -> None:
    """A resume keeps the track, and its counts go on; the SDK's full restart publishes a new track, counted anew."""
    call = make_call("bot")
    await call.connect()
    async with audio_track() as track:
        info = await call.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        first = await server.wait_heard("bot", timeout=15)
        assert first.track_sid == info.sid

        back = expect(call, "reconnected")
        await server.drop_signal("bot")  # the SDK resumes
        await within("reconnected after the resume", back)
        resumed = await server.wait_heard("bot", frames=first.frames + 50, timeout=15)
        assert resumed.track_sid == first.track_sid
        assert [t.track_sid for t in server.received("bot")] == [first.track_sid]

        back = expect(call, "reconnected")
        await server.leave("bot", reason="unknown", action="reconnect")  # the SDK's full restart: a new session
        await within("reconnected after the restart", back)
        restarted = await server.wait_heard("bot", timeout=15)
        assert restarted.track_sid != first.track_sid
        assert [t.track_sid for t in server.received("bot")] == [restarted.track_sid]
