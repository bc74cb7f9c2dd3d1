"""mypy --strict accepts right handlers and rejects wrong ones; real SDK objects fit the model Protocols.

One mypy run checks a snippet in which every line that must be an error ends with ``# E``; the lines mypy
reports must be exactly those.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SNIPPET = """\
from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from livekit import rtc

from rtcstack._emitter import CallEvent, EventEmitter
from rtcstack._models import Participant, TrackInfo, participant_from_sdk, track_info_from_sdk
from rtcstack._vocab import ConnectionStateName, DisconnectReason, QualityName

e = EventEmitter()


def on_nothing() -> None: ...
def on_state(state: ConnectionStateName, previous: ConnectionStateName) -> None: ...
def on_attempt(attempt: int) -> None: ...
async def on_attempt_async(attempt: int) -> None: ...
def on_reason(reason: DisconnectReason) -> None: ...
def on_expiry(expires_at: datetime) -> None: ...
def on_error(error: Exception) -> None: ...
def on_participant(participant: Participant) -> None: ...
def on_quality(participant: Participant, quality: QualityName) -> None: ...
def on_track(participant: Participant, track: TrackInfo) -> None: ...
def on_speakers(participants: list[Participant]) -> None: ...
def on_data(data: bytes, participant: Participant | None, topic: str | None, reliable: bool) -> None: ...
def on_data_before_reliable(data: bytes, participant: Participant | None, topic: str | None) -> None: ...
def on_failed(participant: Participant, track_sid: str, error: str) -> None: ...
def on_any_state(state: str, previous: str) -> None: ...
def returns_int(attempt: int) -> int: return attempt


e.on("state_changed", on_state)
e.on("state_changed", on_any_state)
e.on("connected", on_nothing)
e.once("reconnected", on_nothing)
e.on("reconnecting", on_attempt)
e.on("reconnecting", on_attempt_async)
e.on("disconnected", on_reason)
e.on("token_expired", on_expiry)
e.on("token_refreshed", on_expiry)
e.on("token_refresh_failed", on_error)
e.on("participant_joined", on_participant)
e.on("participant_left", on_participant)
e.on("participant_updated", on_participant)
e.on("connection_quality_changed", on_quality)
e.on("track_published", on_track)
e.on("track_unmuted", on_track)
e.on("track_subscribed", on_track)
e.once("track_unsubscribed", on_track)
e.on("track_subscription_failed", on_failed)
e.on("active_speakers_changed", on_speakers)
e.on("data_received", on_data)
e.on("connected", lambda: None)
e.off("connected", on_nothing)
kept: Callable[[int], None] = e.on("reconnecting", on_attempt)

e.on("reconnecting", on_participant)  # E
e.on("reconnecting", returns_int)  # E
e.on("connected", on_attempt)  # E
e.on("connection_quality_changed", on_participant)  # E
e.on("data_received", on_quality)  # E
e.on("track_muted", on_quality)  # E
e.on("track_subscribed", on_failed)  # E
e.on("track_subscription_failed", on_track)  # E
e.on("data_received", on_data_before_reliable)  # E
e.on("disconnected", on_state)  # E
e.once("token_expired", on_error)  # E
e.once("active_speakers_changed", on_participant)  # E
e.on("conected", on_nothing)  # E
e.off("conected")  # E


@e.on("reconnecting")
async def decorated(attempt: int) -> None: ...


still_typed: Callable[[int], Coroutine[Any, Any, None]] = decorated
not_an_int: int = decorated  # E


@e.once("participant_joined")  # E
def wrong_decorated(attempt: int) -> None: ...


async def pull() -> None:
    event: CallEvent = await e.wait_for("reconnecting", timeout=1.0)
    maybe: int | None = event.attempt
    surely: int = event.attempt  # E
    state: ConnectionStateName | None = event.state
    async for ev in e.events():
        topic: str | None = ev.topic
    await e.wait_for("nope")  # E


def snapshots(
    remote: rtc.RemoteParticipant, local: rtc.LocalParticipant, pub: rtc.LocalTrackPublication
) -> list[Participant | TrackInfo]:
    return [
        participant_from_sdk(remote, is_local=False, quality="good", is_speaking=False),
        participant_from_sdk(local, is_local=True, quality="unknown", is_speaking=True),
        track_info_from_sdk(pub),
        participant_from_sdk(remote, is_local=False, quality="great", is_speaking=False),  # E
    ]
"""


def test_mypy_accepts_right_handlers_and_rejects_wrong_ones(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    expected = {n for n, line in enumerate(SNIPPET.splitlines(), start=1) if line.endswith("# E")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--hide-error-context",
            "--show-error-codes",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),  # its own: never the repo's cache, which a concurrent mypy may be writing
            str(snippet),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    reported = {int(m.group(1)) for m in re.finditer(r"^.*snippet\.py:(\d+): error:", proc.stdout, flags=re.MULTILINE)}
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert reported == expected, proc.stdout
