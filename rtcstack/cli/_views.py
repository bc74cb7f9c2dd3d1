"""What `rtcstack watch` and `rtcstack demo` show of a call: a live panel, a line per event, or JSON lines.

The words come from pure functions of a `CallEvent` (`event_text`, `event_record`) and of the call's public state
(`panel_lines`), so they are tested without a terminal. The three views only decide where the words go:

- `LiveView` (stdout is a terminal): a panel redrawn in place, with the state, a reconnect banner, the roster with
  each participant's quality, the token's time left, the last few events and, for the demo, the story's steps.
- `LineView`: one timestamped line per event (a log, or a pipe).
- `JsonView`: one JSON object per event, only the keys that event has.

Nothing here prints a token: views read the call's public state and events, which carry none.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal, Protocol, TextIO

from .._emitter import CallEvent
from .._models import Participant, TrackInfo
from .._vocab import ConnectionStateName, DisconnectReason, MediaHealthName, QualityName

__all__ = [
    "CallState",
    "JsonView",
    "LineView",
    "LiveView",
    "StoryStep",
    "View",
    "event_record",
    "event_text",
    "format_left",
    "panel_lines",
    "refresh_every",
    "render",
    "show_events",
    "wants_color",
    "wants_live",
]

# SGR codes
_BOLD = "1"
_DIM = "2"
_RED = "31"
_GREEN = "32"
_YELLOW = "33"
_CYAN = "36"
_BANNER = "1;30;43"  # bold black on yellow
_ENDED = "1;37;41"  # bold white on red

_QUALITY_STYLE: dict[QualityName, str] = {
    "excellent": _GREEN,
    "good": _GREEN,
    "poor": _YELLOW,
    "lost": _RED,
    "unknown": _DIM,
}
_MEDIA_STYLE: dict[MediaHealthName | Literal["muted"], str] = {
    "flowing": _GREEN,
    "stalled": _RED,
    "unknown": _DIM,
    "muted": _DIM,
}
_STATE_STYLE: dict[ConnectionStateName, str] = {
    "idle": _DIM,
    "connecting": _CYAN,
    "connected": _GREEN,
    "reconnecting": _YELLOW,
    "disconnected": _RED,
}
_LOG_LINES = 8
_TOKEN_WARN_SECONDS = 60.0


class CallState(Protocol):
    """The public state of a `Call` that the views read (a fake in unit tests)."""

    @property
    def connection_state(self) -> ConnectionStateName: ...
    @property
    def reconnect_attempt(self) -> int: ...
    @property
    def participants(self) -> list[Participant]: ...
    @property
    def local_participant(self) -> Participant | None: ...
    @property
    def token_expires_at(self) -> datetime: ...
    @property
    def disconnect_reason(self) -> DisconnectReason | None: ...


StepStatus = Literal["pending", "running", "ok", "failed"]


@dataclass(frozen=True)
class StoryStep:
    """One step of the demo's story as the live view shows it."""

    label: str
    status: StepStatus
    detail: str = ""


# -- words --------------------------------------------------------------------------------------------------------


def format_left(seconds: float) -> str:
    """A duration for people: ``42s``, ``9m58s``, ``5h59m``; negative ones read ``expired 3s ago``."""
    whole = int(abs(seconds))
    if whole < 60:
        text = f"{whole}s"
    elif whole < 3600:
        text = f"{whole // 60}m{whole % 60:02d}s"
    else:
        text = f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"expired {text} ago" if seconds < 0 else text


def _who(participant: Participant | None) -> str:
    if participant is None:
        return "(unknown)"
    return f"{participant.identity} (you)" if participant.is_local else participant.identity


def _whose(participant: Participant | None, track: TrackInfo | None) -> str:
    """``bob's microphone``, ``your camera``: a track by its owner and source."""
    owner = "your" if participant is not None and participant.is_local else f"{_who(participant)}'s"
    return f"{owner} {track.source if track is not None else 'track'}"


def _when(at: datetime, now: datetime) -> str:
    return f"{at.astimezone().strftime('%H:%M:%S')}, in {format_left((at - now).total_seconds())}"


def event_text(event: CallEvent, now: datetime) -> str | None:
    """The line a person reads for ``event`` (None for the events the views do not list)."""
    name = event.name
    who = _who(event.participant)
    if name == "state_changed":
        return "connecting" if event.state == "connecting" else None
    if name == "connected":
        return "connected"
    if name == "reconnecting":
        return f"reconnecting (attempt {event.attempt})"
    if name == "reconnected":
        return "reconnected"
    if name == "disconnected":
        return f"disconnected ({event.reason})"
    if name == "token_expired" and event.expires_at is not None:
        return f"token expiring ({_when(event.expires_at, now)})"
    if name == "token_refreshed" and event.expires_at is not None:
        return f"token refreshed (expires {_when(event.expires_at, now)})"
    if name == "token_refresh_failed":
        return f"token refresh failed: {event.error}"
    if name == "participant_joined":
        kind = event.participant.kind if event.participant is not None else "standard"
        return f"+ {who} joined" + ("" if kind == "standard" else f" ({kind})")
    if name == "participant_left":
        return f"- {who} left"
    if name == "participant_updated":
        state = event.participant.state if event.participant is not None else "unknown"
        return f"~ {who} updated ({state})"
    if name == "connection_quality_changed":
        return f"quality {who}: {event.quality}"
    if name == "track_subscription_failed":
        return f"{who} track {event.track_sid} could not be subscribed: {event.error}"
    if name == "track_stalled":
        reason = (event.reason or "unknown").replace("_", " ")
        return f"{_whose(event.participant, event.track)} stalled ({reason})"
    if name == "track_resumed":
        return f"{_whose(event.participant, event.track)} resumed after {event.stalled_for or 0.0:.1f} s"
    if name == "media_restored":
        return f"media restored {event.after or 0.0:.1f} s after the reconnect"
    if name.startswith("track_"):
        track = event.track
        what = f"{track.source} {track.kind} {track.name!r}" if track is not None else "a track"
        return f"{who} {name.removeprefix('track_')} {what}"
    if name == "active_speakers_changed":
        speakers = event.participants or []
        return "speaking: " + (", ".join(_who(p) for p in speakers) or "nobody")
    if name == "data_received":
        topic = f" on {event.topic!r}" if event.topic else ""
        return f"data from {who if event.participant else 'the server'}{topic}: {len(event.data or b'')} bytes"
    return name


def _brief(participant: Participant) -> dict[str, object]:
    return {"identity": participant.identity, "kind": participant.kind, "quality": participant.connection_quality}


def event_record(event: CallEvent, call: CallState | None = None) -> dict[str, object]:
    """The JSON object for ``event``: ``event`` and the keys it has (``state``, ``attempt``, ``reason``, ...).

    A ``connected`` record also lists the roster (``participants``), since people already in the room are not
    announced one by one; that takes ``call``.
    """
    record: dict[str, object] = {"event": event.name}
    if event.name == "state_changed":
        record["state"] = event.state
        record["previous"] = event.previous
    elif event.name == "reconnecting":
        record["attempt"] = event.attempt
    elif event.name == "disconnected":
        record["reason"] = event.reason
    elif event.name == "connected" and call is not None:
        local = call.local_participant
        if local is not None:
            record["identity"] = local.identity
        record["participants"] = [_brief(p) for p in call.participants]
    elif event.name in ("token_expired", "token_refreshed") and event.expires_at is not None:
        record["expires_at"] = event.expires_at.isoformat()
    elif event.name == "token_refresh_failed":
        record["error"] = str(event.error)
    elif event.name == "track_subscription_failed":
        record["track_sid"] = event.track_sid
        record["error"] = str(event.error)
    elif event.name == "track_stalled":
        record["reason"] = event.reason
    elif event.name == "track_resumed":
        record["stalled_for"] = event.stalled_for
    elif event.name == "media_restored":
        record["after"] = event.after
    elif event.name == "active_speakers_changed":
        record["identities"] = [p.identity for p in event.participants or []]
    elif event.name == "data_received":
        record["identity"] = event.participant.identity if event.participant is not None else None
        record["topic"] = event.topic
        record["size"] = len(event.data or b"")
        record["reliable"] = event.reliable
    participant = event.participant
    if participant is not None and event.name != "data_received":
        record["identity"] = participant.identity
        if event.name == "participant_joined":
            record["kind"] = participant.kind
        if participant.is_local:
            record["local"] = True
    if event.name == "connection_quality_changed":
        record["quality"] = event.quality
    track = event.track
    if track is not None:
        record["track"] = {"sid": track.sid, "name": track.name, "kind": track.kind, "source": track.source}
    return record


# -- the panel ----------------------------------------------------------------------------------------------------

Segment = tuple[str, str]
"""A piece of a line: its text and its SGR style ("" for plain)."""
PanelLine = list[Segment]


def _state_line(call: CallState, now: datetime) -> PanelLine:
    state = call.connection_state
    line: PanelLine = [("state  ", _DIM), (state.upper(), f"{_BOLD};{_STATE_STYLE[state]}")]
    if state == "disconnected" and call.disconnect_reason is not None:
        line.append((f" ({call.disconnect_reason})", _RED))
    if state != "disconnected":
        left = (call.token_expires_at - now).total_seconds()
        style = "" if left > _TOKEN_WARN_SECONDS else (_YELLOW if left > 0 else _RED)
        label = f"{format_left(left)} left" if left >= 0 else format_left(left)
        line += [("    token ", _DIM), (label, style)]
    return line


def _participant_line(participant: Participant, width: int) -> PanelLine:
    """A participant, their kind and quality, then the media of each of their tracks (``microphone flowing``)."""
    name = _who(participant)
    quality = participant.connection_quality
    line: PanelLine = [
        (f"  {name:<{width}}  ", _BOLD if participant.is_local else ""),
        (f"{participant.kind:<10}", _DIM),
        (f"{quality:<9}", _QUALITY_STYLE[quality]),
    ]
    for track in participant.tracks:
        media: MediaHealthName | Literal["muted"] = "muted" if track.muted else track.media
        line += [(f"{'  ' if len(line) == 3 else ', '}{track.source} ", _DIM), (media, _MEDIA_STYLE[media])]
    return line


_STEP_MARK: dict[StepStatus, Segment] = {
    "pending": ("[  ] ", _DIM),
    "running": ("[..] ", _CYAN),
    "ok": ("[ok] ", _GREEN),
    "failed": ("[!!] ", _RED),
}


def panel_lines(
    call: CallState,
    now: datetime,
    *,
    title: str,
    log: Sequence[tuple[str, str]] = (),
    story: Sequence[StoryStep] = (),
    max_lines: int = 40,
) -> list[PanelLine]:
    """The live panel: title, state and token, reconnect banner, roster, story steps, recent events (``log``).

    It never exceeds ``max_lines`` (a taller panel could not be redrawn in place): the roster is cut (with a
    ``... and N more`` line) to leave room for the newest event, older events fill what is left, and what still
    does not fit is cut at the bottom.
    """
    top: list[PanelLine] = [[(title, _BOLD)], _state_line(call, now)]
    if call.connection_state == "reconnecting":
        top.append([(f" RECONNECTING (attempt {call.reconnect_attempt}) ", _BANNER)])
    elif call.connection_state == "disconnected":
        top.append([(f" CALL ENDED: {call.disconnect_reason or 'unknown'} ", _ENDED)])
    people = [p for p in (call.local_participant,) if p is not None] + call.participants
    steps: list[PanelLine] = []
    if story:
        steps.append([("story", _DIM)])
        label_width = max(len(step.label) for step in story)
        for step in story:
            mark = _STEP_MARK[step.status]
            detail = (step.detail, _RED if step.status == "failed" else _DIM)
            steps.append([("  ", ""), mark, (f"{step.label:<{label_width}}  ", ""), detail])
    newest_event = 2 if log else 0  # keep room for the events header and the newest event
    room_for_people = max(1, max_lines - len(top) - len(steps) - 1 - newest_event)
    roster: list[PanelLine] = [[(f"participants ({len(people)})", _DIM)]]
    width = max((len(_who(p)) for p in people), default=0)
    shown = people if len(people) <= room_for_people else people[: room_for_people - 1]
    roster += [_participant_line(p, width) for p in shown]
    if len(shown) < len(people):
        roster.append([(f"  ... and {len(people) - len(shown)} more", _DIM)])
    room_for_log = max_lines - len(top) - len(roster) - len(steps) - 1
    events: list[PanelLine] = []
    if log and room_for_log > 0:
        events.append([("events", _DIM)])
        events += [[(f"  {stamp}  ", _DIM), (text, "")] for stamp, text in log[-room_for_log:]]
    return (top + roster + steps + events)[:max_lines]


def render(line: PanelLine, width: int, color: bool) -> str:
    """``line`` as text cut to ``width`` visible characters, with ANSI styles when ``color``."""
    out: list[str] = []
    room = width
    for text, style in line:
        if room <= 0:
            break
        piece = text[:room]
        room -= len(piece)
        out.append(f"\x1b[{style}m{piece}\x1b[0m" if color and style else piece)
    return "".join(out)


# -- views --------------------------------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class View:
    """Where the events and notes of one call go. The base class drops everything; subclasses show it."""

    def __init__(self, call: CallState, out: TextIO, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.call = call
        self.out = out
        self.clock = clock

    def event(self, event: CallEvent) -> None:
        """Show one event of the call."""

    def note(self, text: str) -> None:
        """Show a line of narration (the demo's steps, a note of the command)."""

    def set_story(self, steps: Sequence[StoryStep]) -> None:
        """Show the demo's steps and their status (the live view lists them in a section of their own)."""

    def step(self, text: str) -> None:
        """Narrate the story's progress: a note, except in the live view, whose story section shows it."""
        self.note(text)

    def refresh(self) -> None:
        """Redraw what changes with time (the token's time left); called about once a second."""

    def close(self) -> None:
        """The last redraw; the view is not used afterwards."""


class _Stamped(View):
    """A view that labels lines with the time: elapsed seconds since it started, or the wall clock."""

    def __init__(self, call: CallState, out: TextIO, *, elapsed: bool, clock: Callable[[], datetime] = _utcnow) -> None:
        super().__init__(call, out, clock=clock)
        self._elapsed = elapsed
        self._started = time.monotonic()

    def stamp(self) -> str:
        if self._elapsed:
            return f"{time.monotonic() - self._started:6.2f}s"
        return self.clock().astimezone().strftime("%H:%M:%S")


class LineView(_Stamped):
    """One line per event: ``<time>  <text>``; narration lines are the same, for a log or a pipe."""

    def event(self, event: CallEvent) -> None:
        text = event_text(event, self.clock())
        if text is not None:
            self._line(text)

    def note(self, text: str) -> None:
        self._line(text)

    def _line(self, text: str) -> None:
        print(f"{self.stamp()}  {text}", file=self.out, flush=True)


class JsonView(View):
    """One JSON object per event and per note (``{"event": "note", "text": ...}``), flushed line by line."""

    def event(self, event: CallEvent) -> None:
        self._write(event_record(event, self.call))

    def note(self, text: str) -> None:
        self._write({"event": "note", "text": text})

    def _write(self, record: dict[str, object]) -> None:
        print(json.dumps(record, separators=(",", ":")), file=self.out, flush=True)


class LiveView(_Stamped):
    """The panel of `panel_lines`, redrawn in place on a terminal (cursor up, clear down, draw)."""

    def __init__(
        self,
        call: CallState,
        out: TextIO,
        *,
        title: str,
        elapsed: bool,
        color: bool = True,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        super().__init__(call, out, elapsed=elapsed, clock=clock)
        self._title = title
        self._color = color
        self._log: deque[tuple[str, str]] = deque(maxlen=_LOG_LINES)
        self._story: list[StoryStep] = []
        self._drawn = 0
        self._closed = False
        self.out.write("\x1b[?25l")  # hide the cursor while the panel is live

    def event(self, event: CallEvent) -> None:
        text = event_text(event, self.clock())
        if text is not None:
            self._log.append((self.stamp(), text))
        self._draw()

    def note(self, text: str) -> None:
        self._log.append((self.stamp(), text))
        self._draw()

    def set_story(self, steps: Sequence[StoryStep]) -> None:
        self._story = list(steps)
        self._draw()

    def step(self, text: str) -> None:
        self._draw()

    def refresh(self) -> None:
        self._draw()

    def close(self) -> None:
        if self._closed:
            return
        self._draw()
        self._closed = True
        self.out.write("\x1b[?25h")
        self.out.flush()

    def _draw(self) -> None:
        if self._closed:
            return
        size = shutil.get_terminal_size()
        lines = panel_lines(
            self.call,
            self.clock(),
            title=self._title,
            log=list(self._log),
            story=self._story,
            max_lines=max(4, size.lines - 1),
        )
        text = "\n".join(render(line, size.columns - 1, self._color) for line in lines)
        up = f"\x1b[{self._drawn}F" if self._drawn else "\r"
        self.out.write(f"{up}\x1b[J{text}\n")
        self.out.flush()
        self._drawn = len(lines)


def wants_live(out: TextIO = sys.stdout) -> bool:
    """Whether ``out`` is a terminal that can redraw in place."""
    return out.isatty() and os.environ.get("TERM", "") != "dumb"


def wants_color() -> bool:
    """Whether to style the live panel (``NO_COLOR``, see no-color.org, turns styles off)."""
    return not os.environ.get("NO_COLOR")


async def show_events(
    events: AsyncIterable[CallEvent], view: View, *, also: Callable[[CallEvent], None] | None = None
) -> None:
    """Show every event of ``events`` (a call's ``events()``) in ``view``, after handing it to ``also``."""
    async for event in events:
        if also is not None:
            also(event)
        view.event(event)


async def refresh_every(view: View, seconds: float = 1.0) -> None:
    """Refresh ``view`` every ``seconds`` (the token's time left) until cancelled."""
    while True:
        await asyncio.sleep(seconds)
        view.refresh()
