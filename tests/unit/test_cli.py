"""The command line without a network: parsing, the one-line errors, `rtcstack token`, and the words of
`rtcstack watch` / `rtcstack demo` (`rtcstack.cli._views`) from events and a fake call, with no terminal."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import jwt
import pytest

from rtcstack._emitter import CallEvent
from rtcstack._models import Participant, TrackInfo
from rtcstack._vocab import EVENT_NAMES, ConnectionStateName, DisconnectReason, QualityName
from rtcstack.cli import main
from rtcstack.cli._common import mint_token, public_url
from rtcstack.cli._demo import Recorder, Step, StepFailed, matches, print_summary, reexec_in_netns
from rtcstack.cli._views import (
    JsonView,
    LineView,
    LiveView,
    StoryStep,
    event_record,
    event_text,
    format_left,
    panel_lines,
    render,
    show_events,
)

KEY = "devkey"
SECRET = "a-development-secret-of-at-least-32-bytes"


@pytest.fixture(autouse=True)
def _no_credentials_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)


def _decode(token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(token, SECRET, algorithms=["HS256"], issuer=KEY)
    return claims


def test_token_prints_the_jwt_alone_with_the_claims(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            *("token", "--room", "demo", "--identity", "alice", "--name", "Alice", "--ttl", "600"),
            *("--api-key", KEY, "--api-secret", SECRET),
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0
    assert err == ""
    assert out.endswith("\n")
    assert out.count("\n") == 1
    claims = _decode(out.strip())
    assert claims["sub"] == "alice"
    assert claims["iss"] == KEY
    assert claims["name"] == "Alice"
    video = claims["video"]
    assert isinstance(video, dict)
    assert video["roomJoin"] is True
    assert video["room"] == "demo"
    assert isinstance(claims["exp"], int)
    assert isinstance(claims["nbf"], int)
    assert claims["exp"] - claims["nbf"] == 600


def test_token_reads_key_and_secret_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    assert main(["token", "--room", "r", "--identity", "bob"]) == 0
    claims = _decode(capsys.readouterr().out.strip())
    assert claims["sub"] == "bob"
    assert "name" not in claims
    assert isinstance(claims["exp"], int)
    assert isinstance(claims["nbf"], int)
    assert claims["exp"] - claims["nbf"] == 3600


@pytest.mark.parametrize(
    ("extra", "missing"),
    [
        ([], "missing API key and API secret"),
        (["--api-key", KEY], "missing API secret: pass --api-secret or set LIVEKIT_API_SECRET"),
        (["--api-secret", SECRET], "missing API key: pass --api-key or set LIVEKIT_API_KEY"),
    ],
)
def test_token_without_key_or_secret_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], extra: list[str], missing: str
) -> None:
    status = main(["token", "--room", "r", "--identity", "i", *extra])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"rtcstack: error: {missing}")


def test_a_short_secret_warns_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--room", "r", "--identity", "i", "--api-key", KEY, "--api-secret", "s"]) == 0
    out, err = capsys.readouterr()
    assert jwt.decode(out.strip(), options={"verify_signature": False})["sub"] == "i"
    assert err == "rtcstack: warning: the API secret is shorter than 32 bytes, weak for HS256\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND (see 'rtcstack --help')"),
        (["nope"], "argument COMMAND: invalid choice: 'nope'"),
        (["token", "--room", "r"], "the following arguments are required: --identity (see 'rtcstack token --help')"),
        (["token", "--room", "r", "--identity", "i", "--ttl", "0"], "argument --ttl: expected a positive number"),
        (["token", "--room", "r", "--identity", "i", "--ttl", "1h"], "argument --ttl: expected a whole number"),
        (["token", "--room", "", "--identity", "i", "--api-key", KEY, "--api-secret", SECRET], "must not be empty"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("rtcstack: error: ")
    assert message in err


def test_help_describes_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("token",):
        assert command in out


def test_python_dash_m_runs_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rtcstack", "token", "--room", "r", "--identity", "i"],
        capture_output=True,
        text=True,
        env={"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert _decode(done.stdout.strip())["sub"] == "i"


# -- the views ----------------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def person(
    identity: str, *, kind: str = "standard", quality: QualityName = "unknown", local: bool = False
) -> Participant:
    return Participant.model_validate(
        {
            "identity": identity,
            "sid": f"PA_{identity}",
            "name": identity.title(),
            "kind": kind,
            "state": "active",
            "connection_quality": quality,
            "metadata": "",
            "attributes": {},
            "is_local": local,
            "is_speaking": False,
            "tracks": [],
            "joined_at": None,
        }
    )


MIC = TrackInfo(sid="TR_1", name="mic", kind="audio", source="microphone", muted=False, subscribed=True)
CAM = TrackInfo(sid="TR_2", name="cam", kind="video", source="camera", muted=False, subscribed=True)


@dataclass
class FakeCall:
    connection_state: ConnectionStateName = "connected"
    reconnect_attempt: int = 0
    participants: list[Participant] = field(default_factory=list)
    local_participant: Participant | None = None
    token_expires_at: datetime = NOW + timedelta(minutes=10)
    disconnect_reason: DisconnectReason | None = None


def plain(lines: list[list[tuple[str, str]]]) -> list[str]:
    return [render(line, 200, color=False).rstrip() for line in lines]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (42.9, "42s"),
        (60, "1m00s"),
        (598, "9m58s"),
        (3600 * 5 + 59 * 60 + 59, "5h59m"),
        (-3.2, "expired 3s ago"),
        (-125, "expired 2m05s ago"),
    ],
)
def test_format_left(seconds: float, text: str) -> None:
    assert format_left(seconds) == text


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (CallEvent("state_changed", ("connecting", "idle")), "connecting"),
        (CallEvent("state_changed", ("connected", "connecting")), None),
        (CallEvent("connected"), "connected"),
        (CallEvent("reconnecting", (2,)), "reconnecting (attempt 2)"),
        (CallEvent("reconnected"), "reconnected"),
        (CallEvent("disconnected", ("room_deleted",)), "disconnected (room_deleted)"),
        (CallEvent("token_refresh_failed", (RuntimeError("boom"),)), "token refresh failed: boom"),
        (CallEvent("participant_joined", (person("bob"),)), "+ bob joined"),
        (CallEvent("participant_joined", (person("agent", kind="agent"),)), "+ agent joined (agent)"),
        (CallEvent("participant_left", (person("bob"),)), "- bob left"),
        (CallEvent("participant_updated", (person("bob"),)), "~ bob updated (active)"),
        (CallEvent("connection_quality_changed", (person("me", local=True), "poor")), "quality me (you): poor"),
        (CallEvent("connection_quality_changed", (person("bob"), "lost")), "quality bob: lost"),
        (CallEvent("track_published", (person("bob"), MIC)), "bob published microphone audio 'mic'"),
        (CallEvent("track_muted", (person("bob"), MIC)), "bob muted microphone audio 'mic'"),
        (CallEvent("active_speakers_changed", ([person("bob"), person("me", local=True)],)), "speaking: bob, me (you)"),
        (CallEvent("active_speakers_changed", ([],)), "speaking: nobody"),
        (CallEvent("data_received", (b"hello", person("bob"), "chat")), "data from bob on 'chat': 5 bytes"),
        (CallEvent("data_received", (b"xy", None, None)), "data from the server: 2 bytes"),
        (CallEvent("track_stalled", (person("bob"), MIC, "no_packets")), "bob's microphone stalled (no packets)"),
        (CallEvent("track_stalled", (person("me", local=True), CAM, "no_frames")), "your camera stalled (no frames)"),
        (CallEvent("track_resumed", (person("bob"), MIC, 3.24)), "bob's microphone resumed after 3.2 s"),
        (CallEvent("media_restored", (4.06,)), "media restored 4.1 s after the reconnect"),
    ],
)
def test_event_text(event: CallEvent, text: str | None) -> None:
    assert event_text(event, NOW) == text


def test_token_event_texts_give_the_expiry_and_the_time_left() -> None:
    at = NOW + timedelta(seconds=125)
    local = at.astimezone().strftime("%H:%M:%S")
    assert event_text(CallEvent("token_expired", (at,)), NOW) == f"token expiring ({local}, in 2m05s)"
    assert event_text(CallEvent("token_refreshed", (at,)), NOW) == f"token refreshed (expires {local}, in 2m05s)"


def test_every_event_has_a_text_or_is_deliberately_silent() -> None:
    samples: dict[str, tuple[object, ...]] = {
        "state_changed": ("connected", "connecting"),
        "reconnecting": (1,),
        "disconnected": ("unknown",),
        "token_expired": (NOW,),
        "token_refreshed": (NOW,),
        "token_refresh_failed": (RuntimeError("x"),),
        "participant_joined": (person("p"),),
        "participant_left": (person("p"),),
        "participant_updated": (person("p"),),
        "connection_quality_changed": (person("p"), "good"),
        "track_published": (person("p"), MIC),
        "track_unpublished": (person("p"), MIC),
        "track_muted": (person("p"), MIC),
        "track_unmuted": (person("p"), MIC),
        "track_subscribed": (person("p"), MIC),
        "track_unsubscribed": (person("p"), MIC),
        "track_subscription_failed": (person("p"), "TR_x", "no such track"),
        "active_speakers_changed": ([],),
        "data_received": (b"", None, None, True),
        "track_stalled": (person("p"), MIC, "no_packets"),
        "track_resumed": (person("p"), MIC, 1.0),
        "media_restored": (1.0,),
    }
    for name in EVENT_NAMES:
        text = event_text(CallEvent(name, samples.get(name, ())), NOW)
        assert text is None if name == "state_changed" else text, name


@pytest.mark.parametrize(
    ("event", "record"),
    [
        (
            CallEvent("state_changed", ("reconnecting", "connected")),
            {"event": "state_changed", "state": "reconnecting", "previous": "connected"},
        ),
        (CallEvent("reconnecting", (3,)), {"event": "reconnecting", "attempt": 3}),
        (CallEvent("reconnected"), {"event": "reconnected"}),
        (
            CallEvent("disconnected", ("participant_removed",)),
            {"event": "disconnected", "reason": "participant_removed"},
        ),
        (
            CallEvent("connection_quality_changed", (person("bob"), "poor")),
            {"event": "connection_quality_changed", "identity": "bob", "quality": "poor"},
        ),
        (
            CallEvent("connection_quality_changed", (person("me", local=True), "good")),
            {"event": "connection_quality_changed", "identity": "me", "local": True, "quality": "good"},
        ),
        (
            CallEvent("participant_joined", (person("ag", kind="agent"),)),
            {"event": "participant_joined", "identity": "ag", "kind": "agent"},
        ),
        (CallEvent("participant_left", (person("bob"),)), {"event": "participant_left", "identity": "bob"}),
        (
            CallEvent("track_unmuted", (person("bob"), MIC)),
            {
                "event": "track_unmuted",
                "identity": "bob",
                "track": {"sid": "TR_1", "name": "mic", "kind": "audio", "source": "microphone"},
            },
        ),
        (
            CallEvent("token_refreshed", (NOW,)),
            {"event": "token_refreshed", "expires_at": "2026-11-25T12:00:00+00:00"},
        ),
        (
            CallEvent("token_refresh_failed", (RuntimeError("no"),)),
            {"event": "token_refresh_failed", "error": "no"},
        ),
        (
            CallEvent("active_speakers_changed", ([person("bob")],)),
            {"event": "active_speakers_changed", "identities": ["bob"]},
        ),
        (
            CallEvent("data_received", (b"abc", None, "t", False)),
            {"event": "data_received", "identity": None, "topic": "t", "size": 3, "reliable": False},
        ),
        (
            CallEvent("track_stalled", (person("bob"), MIC, "no_packets")),
            {
                "event": "track_stalled",
                "identity": "bob",
                "reason": "no_packets",
                "track": {"sid": "TR_1", "name": "mic", "kind": "audio", "source": "microphone"},
            },
        ),
        (
            CallEvent("track_resumed", (person("bob"), MIC, 2.5)),
            {
                "event": "track_resumed",
                "identity": "bob",
                "stalled_for": 2.5,
                "track": {"sid": "TR_1", "name": "mic", "kind": "audio", "source": "microphone"},
            },
        ),
        (CallEvent("media_restored", (1.25,)), {"event": "media_restored", "after": 1.25}),
        (
            CallEvent("track_subscription_failed", (person("bob"), "TR_1", "gone")),
            {"event": "track_subscription_failed", "identity": "bob", "track_sid": "TR_1", "error": "gone"},
        ),
    ],
)
def test_event_record_has_only_the_keys_of_its_event(event: CallEvent, record: dict[str, object]) -> None:
    assert event_record(event) == record


def test_a_connected_record_lists_the_roster() -> None:
    call = FakeCall(
        local_participant=person("me", local=True),
        participants=[person("agent", kind="agent", quality="good")],
    )
    assert event_record(CallEvent("connected"), call) == {
        "event": "connected",
        "identity": "me",
        "participants": [{"identity": "agent", "kind": "agent", "quality": "good"}],
    }


def test_panel_when_connected() -> None:
    call = FakeCall(
        local_participant=person("me", local=True, quality="excellent"),
        participants=[person("agent", kind="agent", quality="poor")],
        token_expires_at=NOW + timedelta(seconds=598),
    )
    lines = plain(panel_lines(call, NOW, title="T", log=[("1.00s", "connected")]))
    assert lines == [
        "T",
        "state  CONNECTED    token 9m58s left",
        "participants (2)",
        "  me (you)  standard  excellent",
        "  agent     agent     poor",
        "events",
        "  1.00s  connected",
    ]


def test_panel_shows_the_media_of_each_track() -> None:
    stalled = MIC.model_copy(update={"media": "stalled"})
    flowing = CAM.model_copy(update={"media": "flowing"})
    muted = CAM.model_copy(update={"sid": "TR_3", "source": "screen_share", "muted": True})
    call = FakeCall(
        local_participant=person("me", local=True, quality="good").model_copy(update={"tracks": [MIC]}),
        participants=[person("bob", quality="excellent").model_copy(update={"tracks": [stalled, flowing, muted]})],
    )
    lines = plain(panel_lines(call, NOW, title="T"))
    assert lines[2:] == [
        "participants (2)",
        "  me (you)  standard  good       microphone unknown",
        "  bob       standard  excellent  microphone stalled, camera flowing, screen_share muted",
    ]
    styled = render(panel_lines(call, NOW, title="T")[-1], 200, color=True)
    assert "\x1b[31mstalled\x1b[0m" in styled and "\x1b[32mflowing\x1b[0m" in styled


def test_panel_shows_the_reconnect_banner_with_the_attempt() -> None:
    call = FakeCall(connection_state="reconnecting", reconnect_attempt=2)
    lines = plain(panel_lines(call, NOW, title="T"))
    assert lines[1].startswith("state  RECONNECTING")
    assert lines[2] == " RECONNECTING (attempt 2)"


def test_panel_when_ended_and_with_an_expired_token() -> None:
    ended = plain(
        panel_lines(FakeCall(connection_state="disconnected", disconnect_reason="room_deleted"), NOW, title="T")
    )
    assert ended[1:3] == ["state  DISCONNECTED (room_deleted)", " CALL ENDED: room_deleted"]
    expired = plain(panel_lines(FakeCall(token_expires_at=NOW - timedelta(seconds=5)), NOW, title="T"))
    assert expired[1] == "state  CONNECTED    token expired 5s ago"


def test_panel_lists_the_story_and_cuts_a_long_roster() -> None:
    call = FakeCall(participants=[person(f"p{i}") for i in range(50)])
    story = [StoryStep("a. one", "ok", "done"), StoryStep("b. second", "failed", "no event"), StoryStep("c", "pending")]
    lines = plain(panel_lines(call, NOW, title="T", story=story, max_lines=12))
    assert len(lines) == 12
    assert lines[-4:] == ["story", "  [ok] a. one     done", "  [!!] b. second  no event", "  [  ] c"]
    assert lines[2] == "participants (50)"
    assert lines[-5] == "  ... and 46 more"


def test_panel_drops_the_oldest_events_first_to_fit() -> None:
    call = FakeCall(local_participant=person("me", local=True), participants=[person("bob")])
    log = [(f"{i}.00s", f"event {i}") for i in range(20)]
    lines = plain(panel_lines(call, NOW, title="T", log=log, max_lines=9))
    assert lines == [
        "T",
        "state  CONNECTED    token 10m00s left",
        "participants (2)",
        "  me (you)  standard  unknown",
        "  bob       standard  unknown",
        "events",
        "  17.00s  event 17",
        "  18.00s  event 18",
        "  19.00s  event 19",
    ]
    tiny = plain(panel_lines(call, NOW, title="T", log=log, story=[StoryStep("a", "ok")] * 5, max_lines=4))
    assert tiny == ["T", "state  CONNECTED    token 10m00s left", "participants (2)", "  ... and 2 more"]


def test_render_cuts_to_the_width_and_styles_only_with_color() -> None:
    line = [("abc", "1"), ("def", ""), ("ghi", "31")]
    assert render(line, 5, color=False) == "abcde"
    assert render(line, 7, color=True) == "\x1b[1mabc\x1b[0mdef\x1b[31mg\x1b[0m"


def test_line_view_prints_a_stamped_line_per_shown_event() -> None:
    out = io.StringIO()
    view = LineView(FakeCall(), out, elapsed=True)
    view.event(CallEvent("state_changed", ("connected", "connecting")))
    view.event(CallEvent("reconnecting", (1,)))
    view.note("a note")
    view.step("== a step")
    view.set_story([StoryStep("a", "ok")])
    view.refresh()
    view.close()
    stamped = [re.fullmatch(r" *\d+\.\d\ds  (.*)", line) for line in out.getvalue().splitlines()]
    assert [match.group(1) if match else None for match in stamped] == [
        "reconnecting (attempt 1)",
        "a note",
        "== a step",
    ]


def test_line_view_with_the_wall_clock() -> None:
    out = io.StringIO()
    LineView(FakeCall(), out, elapsed=False, clock=lambda: NOW).note("x")
    assert out.getvalue() == f"{NOW.astimezone().strftime('%H:%M:%S')}  x\n"


def test_json_view_prints_one_object_per_line() -> None:
    out = io.StringIO()
    view = JsonView(FakeCall(), out)
    view.event(CallEvent("reconnecting", (1,)))
    view.note("hi")
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"event": "reconnecting", "attempt": 1},
        {"event": "note", "text": "hi"},
    ]


def test_live_view_redraws_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "30")
    out = io.StringIO()
    call = FakeCall(local_participant=person("me", local=True))
    view = LiveView(call, out, title="T", elapsed=True, color=True, clock=lambda: NOW)
    view.event(CallEvent("connected"))
    first = out.getvalue()
    assert first.startswith("\x1b[?25l\r\x1b[J")
    drawn = first.count("\n")
    call.connection_state = "reconnecting"
    call.reconnect_attempt = 1
    view.event(CallEvent("reconnecting", (1,)))
    second = out.getvalue()[len(first) :]
    assert second.startswith(f"\x1b[{drawn}F\x1b[J")
    assert "RECONNECTING (attempt 1)" in _ANSI.sub("", second)
    view.step("not listed: the story section shows the steps")
    view.close()
    view.close()
    assert out.getvalue().endswith("\x1b[?25h")
    assert "not listed" not in out.getvalue()
    assert out.getvalue().count("\x1b[?25h") == 1


async def test_show_events_hands_each_event_on_then_shows_it() -> None:
    async def events() -> AsyncIterator[CallEvent]:
        yield CallEvent("connected")
        yield CallEvent("disconnected", ("room_deleted",))

    out = io.StringIO()
    seen: list[str] = []
    await show_events(events(), JsonView(FakeCall(), out), also=lambda event: seen.append(event.name))
    assert seen == ["connected", "disconnected"]
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == seen


# -- watch: arguments checked before any I/O ------------------------------------------------------------------------


def _jwt(identity: str = "watcher", room: str = "demo") -> str:
    return mint_token(KEY, SECRET, room=room, identity=identity, ttl=600)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["watch", "ws://127.0.0.1:7880"], "give --token, or --room and --identity with an API key and secret"),
        (["watch", "ws://127.0.0.1:7880", "--room", "r"], "give --token, or --room and --identity"),
        (["watch", "ws://127.0.0.1:7880", "--token", "x", "--room", "r"], "give --token or --room, not both"),
        (
            ["watch", "ws://127.0.0.1:7880", "--token", "x", "--api-key", KEY],
            "give --token or --api-key, not both",
        ),
        (["watch", "ws://127.0.0.1:7880", "--room", "r", "--identity", "i"], "missing API key and API secret"),
        (["watch", "ws://127.0.0.1:7880", "--token", "not-a-jwt"], "token is not a JWT"),
        (["watch", "ws://127.0.0.1:7880", "--json", "--plain", "--token", "x"], "not allowed with argument"),
        (["watch", "--token", "x"], "the following arguments are required: URL"),
    ],
)
def test_watch_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("rtcstack: error: ")
    assert message in err


@pytest.mark.parametrize("url", ["ftp://127.0.0.1", "ws://", "ws://host with space"])
def test_watch_with_a_bad_url_is_one_line_and_never_shows_the_token(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    token = _jwt()
    assert main(["watch", url, "--token", token]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("rtcstack: error: url ")
    assert token not in err


def test_public_url_drops_what_may_hold_a_secret() -> None:
    assert public_url("wss://user:pw@example.com:7880/rtc?access_token=abc#x") == "wss://example.com:7880/rtc"
    assert public_url("ws://[::1]:7880") == "ws://[::1]:7880"
    assert public_url("ws://127.0.0.1") == "ws://127.0.0.1"


def test_help_of_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("token", "serve", "watch", "demo"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: rtcstack {command}")
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    for command in ("token", "serve", "watch", "demo"):
        assert f"    {command} " in top


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "70000"], "argument --port: expected a port number from 0 to 65535, not 70000"),
        (["serve", "--port", "http"], "argument --port: expected a port number, not 'http'"),
        (["demo", "--colour"], "unrecognized arguments: --colour"),
    ],
)
def test_serve_and_demo_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err


# -- demo: the parts that need no server ----------------------------------------------------------------------------


async def test_recorder_waits_for_past_and_coming_events() -> None:
    recorder = Recorder()
    recorder.add(CallEvent("reconnecting", (1,)))
    assert (await recorder.wait("r1", matches("reconnecting", attempt=1))).attempt == 1
    since = recorder.mark()
    waiting = asyncio.ensure_future(recorder.wait("r2", matches("reconnecting"), since=since))
    await asyncio.sleep(0)
    recorder.add(CallEvent("connected"))
    recorder.add(CallEvent("reconnecting", (2,)))
    assert (await waiting).attempt == 2


async def test_recorder_names_what_did_not_happen() -> None:
    recorder = Recorder()
    recorder.add(CallEvent("participant_joined", (person("bob"),)))
    assert await recorder.wait("bob", matches("participant_joined", "bob"))
    with pytest.raises(StepFailed, match=r"^no participant_left for bob within 0\.01 s$"):
        await recorder.wait("participant_left for bob", matches("participant_left", "bob"), timeout=0.01)
    with pytest.raises(StepFailed):
        await recorder.wait("alice", matches("participant_joined", "alice"), timeout=0.01)


def test_summary_passes_only_when_every_step_passed(capsys: pytest.CaptureFixture[str]) -> None:
    steps = [Step("a", "one", "ok", "fine", 0.5), Step("b", "two", "ok", "good", 1.0)]
    assert print_summary(steps, 1.5) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "summary",
        "  ok    a. one    0.5 s  fine",
        "  ok    b. two    1.0 s  good",
        "all 2 steps passed in 1.5 s",
    ]
    assert err == ""
    steps[1].status, steps[1].detail = "failed", "no reconnected within 15 s"
    assert print_summary(steps, 1.5) == 1
    out, err = capsys.readouterr()
    assert "  FAIL  b. two    1.0 s  no reconnected within 15 s" in out.splitlines()
    assert err == "rtcstack: error: the demo failed: step b. two (no reconnected within 15 s)\n"


class _Execed(Exception):
    pass


def test_demo_reexecutes_itself_in_a_network_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTCSTACK_NETNS", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(shutil, "which", lambda name, path=None: f"/bin/{name}")
    probes: list[list[str]] = []

    def run(command: list[str], **_: object) -> subprocess.CompletedProcess[bytes]:
        probes.append(command)
        return subprocess.CompletedProcess(command, 0)

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        raise _Execed(path, argv, env)

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(os, "execve", execve)
    with pytest.raises(_Execed) as execed:
        reexec_in_netns(["--plain"])
    path, argv, env = execed.value.args
    assert path == "/bin/unshare"
    assert argv[:4] == ["/bin/unshare", "-rn", "sh", "-c"]
    assert argv[4].endswith(' && exec "$@"')
    assert "/bin/ip addr add 10.99.0.1/24 dev veth0" in argv[4]
    assert argv[5:] == ["sh", sys.executable, "-m", "rtcstack", "demo", "--plain"]
    assert env["RTCSTACK_NETNS"] == "1"
    assert probes == [["/bin/unshare", "-rn", "sh", "-c", argv[4].removesuffix(' && exec "$@"')]]


def test_demo_stays_on_the_host_network_when_it_cannot_unshare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTCSTACK_NETNS", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(shutil, "which", lambda name, path=None: f"/bin/{name}")
    monkeypatch.setattr(subprocess, "run", lambda command, **_: subprocess.CompletedProcess(command, 1))
    assert reexec_in_netns([]) == "cannot create a private network namespace here: the demo runs on the host network"
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None)
    assert reexec_in_netns([]) == "unshare or ip not found: the demo runs on the host network"


def test_demo_does_not_reexecute_inside_a_namespace_or_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTCSTACK_NETNS", "1")
    assert reexec_in_netns([]) is None
    monkeypatch.delenv("RTCSTACK_NETNS")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert reexec_in_netns([]) is None
