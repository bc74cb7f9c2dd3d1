"""`rtcstack demo`: a real call on an embedded LoopbackServer, through a scripted story, shown live.

The story has six steps; each makes the server do something and waits (with a timeout) for the events a person
would expect the call to show:

a. quality drop: the server reports poor quality for you and the agent, then a recovery;
b. a participant joins and leaves;
c. signal drop and resume: the server cuts your signal socket; the call shows ``reconnecting (attempt 1)`` and
   ``reconnected``, and the roster does not change;
d. token expiry: the call's first token is short-lived; it enters the refresh margin (``token_expired``), the app's
   refresher mints a new one (``token_refreshed``); once the first token is past its expiry the server drops the
   call with a leave that allows no resume, and the call's rejoin with a fresh Room (``reconnecting`` ...
   ``reconnected``) works with the refreshed token;
e. media stall: the server stops forwarding the agent's audio (without unpublish or mute); the call's media-health
   watch tells ``track_stalled`` and, once the server forwards it again, ``track_resumed`` (the demo's call has a
   short ``media_stall_timeout``, so this takes about 2 s);
f. room deleted: the call ends with ``disconnected (room_deleted)``.

On Linux the demo first moves into a private network namespace (`reexec_in_netns`): libwebrtc ignores ``lo``, so
the media needs another interface, and the demo should touch no real network.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from .._call import Call, create_call
from .._emitter import CallEvent
from .._errors import ConnectError
from .._options import CallOptions
from ._common import CliError, load_server, run_async, setup_logging, stop_on_signals
from ._views import (
    LineView,
    LiveView,
    StepStatus,
    StoryStep,
    View,
    format_left,
    refresh_every,
    show_events,
    wants_color,
    wants_live,
)

if TYPE_CHECKING:
    from ..testing import LoopbackServer

__all__ = [
    "NETNS_ADDRESS",
    "STEPS",
    "Recorder",
    "Step",
    "StepFailed",
    "matches",
    "print_summary",
    "reexec_in_netns",
    "run_demo",
]

ROOM = "demo"
ME = "alice"
AGENT = "agent"
GUEST = "bob"
NETNS_ADDRESS = "10.99.0.1/24"
STEPS: tuple[tuple[str, str], ...] = (
    ("a", "quality drop"),
    ("b", "a participant joins and leaves"),
    ("c", "signal drop and resume"),
    ("d", "token expiry, refresh and rejoin"),
    ("e", "the agent's audio stalls and resumes"),
    ("f", "room deleted"),
)
LIVE_PACE = 1.5
"""Seconds each change stays on screen in the live view (the plain view does not wait)."""
PAUSES_BEFORE_STEP_D = 7
"""Pauses of the steps before d, so the first token still enters its margin during step d in the live view."""
STEP_TIMEOUT = 15.0
"""Upper bound for one expected event (a resume takes about 3 s)."""
REFRESH_MARGIN = 3.0
MEDIA_STALL_TIMEOUT = 1.0
"""The call's ``media_stall_timeout``: shorter than the default 2 s, so step e does not keep a person waiting."""
FIRST_TOKEN_LEAD = 6.0
"""The first token expires this long after it enters the refresh margin (about when step d starts)."""


class StepFailed(Exception):
    """An expected event did not happen; the message says which."""


class Recorder:
    """Every event of the call in order, and a way to wait for one that is already there or still coming."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self._changed = asyncio.Event()

    def add(self, event: CallEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def mark(self) -> int:
        """A position to wait from: `wait` ignores the events recorded before it."""
        return len(self.events)

    async def wait(
        self, what: str, predicate: Callable[[CallEvent], bool], *, since: int = 0, timeout: float = STEP_TIMEOUT
    ) -> CallEvent:
        """The first event from position ``since`` that satisfies ``predicate``; `StepFailed` after ``timeout``."""

        async def scan() -> CallEvent:
            seen = since
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except asyncio.TimeoutError:
            raise StepFailed(f"no {what} within {timeout:g} s") from None


def matches(name: str, identity: str | None = None, **args: object) -> Callable[[CallEvent], bool]:
    """A predicate: an event called ``name`` (about ``identity``, if given) whose accessors equal ``args``."""

    def check(event: CallEvent) -> bool:
        if event.name != name:
            return False
        if identity is not None and (event.participant is None or event.participant.identity != identity):
            return False
        return all(getattr(event, key) == value for key, value in args.items())

    return check


@dataclass
class Step:
    """One step of the story and, once run, its outcome (``detail`` says what happened or what was missing)."""

    key: str
    label: str
    status: StepStatus = "pending"
    detail: str = ""
    seconds: float = 0.0

    @property
    def title(self) -> str:
        return f"{self.key}. {self.label}"


@dataclass
class Story:
    """The demo's world: the server, the call, what it recorded, where it is shown, and the steps' outcomes."""

    server: LoopbackServer
    call: Call
    recorder: Recorder
    view: View
    first_expiry: datetime
    refreshes: list[datetime] = field(default_factory=list)
    steps: list[Step] = field(default_factory=lambda: [Step(key, label) for key, label in STEPS])
    pace: float = 0.0
    """Seconds to hold each visible change on screen (the live view), so a person can follow the story."""

    def show_steps(self) -> None:
        self.view.set_story([StoryStep(s.title, s.status, s.detail) for s in self.steps])

    async def pause(self) -> None:
        if self.pace:
            await asyncio.sleep(self.pace)


def reexec_in_netns(argv: Sequence[str]) -> str | None:
    """On Linux, outside a namespace of ours (``RTCSTACK_NETNS`` unset), re-execute the demo in a private one.

    The namespace gets ``lo`` up and a veth pair with ``10.99.0.1/24`` on ``veth0`` (both ends inside it), as
    ``scripts/_bootstrap.sh`` does. Does not return when it re-executes; otherwise returns a note saying why the
    demo runs on the host network, or None when it already runs in a namespace (or not on Linux).
    """
    if not sys.platform.startswith("linux") or os.environ.get("RTCSTACK_NETNS"):
        return None
    unshare = shutil.which("unshare")
    ip = shutil.which("ip", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if unshare is None or ip is None:
        return "unshare or ip not found: the demo runs on the host network"
    ipq = shlex.quote(ip)
    setup = (
        f"{ipq} link set lo up && {ipq} link add veth0 type veth peer name veth1 && "
        f"{ipq} addr add {NETNS_ADDRESS} dev veth0 && {ipq} link set veth0 up && {ipq} link set veth1 up"
    )
    try:
        probe = subprocess.run([unshare, "-rn", "sh", "-c", setup], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "cannot create a private network namespace here: the demo runs on the host network"
    if probe.returncode != 0:
        return "cannot create a private network namespace here: the demo runs on the host network"
    command = [unshare, "-rn", "sh", "-c", f'{setup} && exec "$@"', "sh"]
    command += [sys.executable, "-m", "rtcstack", "demo", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(unshare, command, {**os.environ, "RTCSTACK_NETNS": "1"})


def _demo_argv(args: argparse.Namespace) -> list[str]:
    return (["--plain"] if args.plain else []) + ["-v"] * args.verbose


def run_demo(args: argparse.Namespace) -> int:
    """`rtcstack demo`: move into a network namespace if possible, then play the story; 0 if every step passed."""
    note = reexec_in_netns(_demo_argv(args))
    if note is not None:
        print(f"rtcstack: note: {note}", file=sys.stderr, flush=True)
    setup_logging(args.verbose)
    return run_async(_demo(args))


# -- the story ----------------------------------------------------------------------------------------------------


async def _step_a(story: Story) -> str:
    server, recorder = story.server, story.recorder
    for quality in ("excellent", "poor", "good"):
        since = recorder.mark()
        await server.set_connection_quality(ME, quality)
        await server.set_connection_quality(AGENT, quality)
        for who in (ME, AGENT):
            await recorder.wait(
                f"{quality} quality for {who}", matches("connection_quality_changed", who, quality=quality), since=since
            )
        await story.pause()
    return "excellent -> poor -> good, for you and the agent"


async def _step_b(story: Story) -> str:
    server, recorder = story.server, story.recorder
    since = recorder.mark()
    await server.add_participant(ROOM, GUEST, name="Bob")
    await recorder.wait(f"participant_joined for {GUEST}", matches("participant_joined", GUEST), since=since)
    await story.pause()
    since = recorder.mark()
    await server.remove_participant(ROOM, GUEST)
    await recorder.wait(f"participant_left for {GUEST}", matches("participant_left", GUEST), since=since)
    return f"{GUEST} joined and left"


async def _step_c(story: Story) -> str:
    server, recorder, call = story.server, story.recorder, story.call
    since = recorder.mark()
    started = time.monotonic()
    await server.drop_signal(ME)
    await recorder.wait("reconnecting (attempt 1)", matches("reconnecting", attempt=1), since=since)
    await recorder.wait("reconnected", matches("reconnected"), since=since)
    took = time.monotonic() - started
    left = [e.participant.identity for e in recorder.events[since:] if e.name == "participant_left" and e.participant]
    if left or AGENT not in {p.identity for p in call.participants}:
        raise StepFailed(f"the roster changed across the resume ({', '.join(left) or AGENT} left)")
    return f"resumed in {took:.1f} s, roster unchanged"


async def _step_d(story: Story) -> str:
    server, recorder, call = story.server, story.recorder, story.call
    expiring_in = (story.first_expiry - _utcnow()).total_seconds()
    await recorder.wait("token_expired", matches("token_expired"), timeout=max(0.0, expiring_in) + STEP_TIMEOUT)
    await recorder.wait("token_refreshed", matches("token_refreshed"))
    if call.token_expires_at <= story.first_expiry:
        raise StepFailed("the refreshed token does not expire later than the first one")
    wait = (story.first_expiry - _utcnow()).total_seconds() + 0.5
    if wait > 0:
        story.view.note(f"waiting {wait:.1f} s for the first token to expire")
        await asyncio.sleep(wait)
    since = recorder.mark()
    await server.leave(ME, reason="server_shutdown")
    event = await recorder.wait("reconnecting", matches("reconnecting"), since=since)
    await recorder.wait("reconnected", matches("reconnected"), since=since)
    if call.token_expires_at <= _utcnow():
        raise StepFailed("the call rejoined but holds an expired token")
    left = format_left((call.token_expires_at - _utcnow()).total_seconds())
    refreshed = "once" if len(story.refreshes) == 1 else f"{len(story.refreshes)} times"
    # the leave allows no resume (action disconnect): the SDK makes none, so the call's rejoin is the episode's
    # attempt 1 (the README: the SDK's own resume, when it makes one, is attempt 1, and the rejoins come after it)
    how = "rejoined with a fresh Room" + (" (the server allowed no resume)" if event.attempt == 1 else "")
    return f"refreshed {refreshed}; {how}, with {left} left on the token"


async def _step_e(story: Story) -> str:
    server, recorder = story.server, story.recorder
    told = [
        n
        for n, e in enumerate(recorder.events)
        if e.name in ("track_stalled", "track_resumed") and e.participant and e.participant.identity == AGENT
    ]
    if told and recorder.events[told[-1]].name == "track_stalled":  # still without media since the rejoin
        await recorder.wait(f"track_resumed for {AGENT}", matches("track_resumed", AGENT), since=told[-1])
    since = recorder.mark()
    await server.stall_media(AGENT, "microphone")
    stalled = await recorder.wait(
        f"track_stalled for {AGENT}'s microphone", matches("track_stalled", AGENT), since=since
    )
    await story.pause()
    since = recorder.mark()
    await server.resume_media(AGENT, "microphone")
    resumed = await recorder.wait(
        f"track_resumed for {AGENT}'s microphone", matches("track_resumed", AGENT), since=since
    )
    reason = (stalled.reason or "").replace("_", " ")
    return f"{AGENT}'s microphone stalled ({reason}) and resumed after {resumed.stalled_for or 0.0:.1f} s"


async def _step_f(story: Story) -> str:
    server, recorder = story.server, story.recorder
    since = recorder.mark()
    await server.delete_room(ROOM)
    await recorder.wait("disconnected (room_deleted)", matches("disconnected", reason="room_deleted"), since=since)
    return "the call ended with room_deleted"


_STEP_RUNNERS: dict[str, Callable[[Story], Awaitable[str]]] = {
    "a": _step_a,
    "b": _step_b,
    "c": _step_c,
    "d": _step_d,
    "e": _step_e,
    "f": _step_f,
}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


async def _play(story: Story) -> None:
    """Connect, bring in the agent, then run every step, recording each one's outcome."""
    call, recorder, view, server = story.call, story.recorder, story.view, story.server
    view.note(f"{ME} joins room {ROOM!r}; the first token expires in {_until(story.first_expiry)}")
    try:
        await call.connect()
    except ConnectError as exc:
        raise CliError(f"the demo call could not connect to {server.url}: {exc}") from None
    since = recorder.mark()
    await server.add_participant(ROOM, AGENT, name="Agent", kind="agent", audio="tone:440")
    try:
        await recorder.wait(f"participant_joined for {AGENT}", matches("participant_joined", AGENT), since=since)
    except StepFailed as exc:
        raise CliError(f"the demo could not start: {exc}") from None
    for step in story.steps:
        if call.connection_state == "disconnected":
            step.status, step.detail = "failed", f"not run: the call had ended ({call.disconnect_reason})"
            continue
        step.status = "running"
        story.show_steps()
        view.step(f"== {step.title}")
        started = time.monotonic()
        try:
            step.detail = await _STEP_RUNNERS[step.key](story)
            step.status = "ok"
        except StepFailed as exc:
            step.status, step.detail = "failed", str(exc)
        except Exception as exc:  # a step the server could not play (e.g. LookupError: the call is not there)
            step.status, step.detail = "failed", f"{type(exc).__name__}: {exc}"
        step.seconds = time.monotonic() - started
        view.step(f"{'ok' if step.status == 'ok' else 'FAILED'} {step.title}: {step.detail}")
        await story.pause()
        story.show_steps()


def _until(at: datetime) -> str:
    return format_left((at - _utcnow()).total_seconds())


async def _demo(args: argparse.Namespace) -> int:
    server = load_server()(host="127.0.0.1", port=0, token_refresh=False)
    try:
        await server.start()
    except OSError as exc:
        raise CliError(f"cannot start the demo server on 127.0.0.1: {exc.strerror or exc}") from None
    started = time.monotonic()
    refreshes: list[datetime] = []

    def refresher() -> str:
        refreshes.append(_utcnow())
        return server.token(ME, room=ROOM, ttl=600)

    live = not args.plain and wants_live()
    pace = LIVE_PACE if live else 0.0
    first = server.token(ME, room=ROOM, ttl=REFRESH_MARGIN + FIRST_TOKEN_LEAD + PAUSES_BEFORE_STEP_D * pace)
    call = create_call(
        server.url,
        first,
        token_refresher=refresher,
        options=CallOptions(token_refresh_margin=REFRESH_MARGIN, media_stall_timeout=MEDIA_STALL_TIMEOUT),
    )
    where = "a private network namespace" if os.environ.get("RTCSTACK_NETNS") else "the host network"
    view: View
    if not live:
        view = LineView(call, sys.stdout, elapsed=True)
    else:
        title = f"rtcstack demo  {server.url}  room {ROOM}  as {ME}"
        view = LiveView(call, sys.stdout, title=title, elapsed=True, color=wants_color())
    recorder = Recorder()
    story = Story(server, call, recorder, view, call.token_expires_at, refreshes, pace=pace)
    shower = asyncio.create_task(show_events(call.events(), view, also=recorder.add))
    ticker = asyncio.create_task(refresh_every(view))
    stop = asyncio.Event()
    interrupted = False
    try:
        view.note(f"LoopbackServer on {server.url}, in {where}")
        story.show_steps()
        with stop_on_signals(stop):
            play = asyncio.create_task(_play(story))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({play, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not play.done():
                interrupted = True
                play.cancel()
            await asyncio.wait({play})
            await call.disconnect()
            await asyncio.wait({shower}, timeout=STEP_TIMEOUT)
            if not play.cancelled():
                play.result()
    finally:
        ticker.cancel()
        shower.cancel()
        view.close()
        await server.close()
    if interrupted:
        print("rtcstack: demo interrupted", file=sys.stderr)
        return 130
    return print_summary(story.steps, time.monotonic() - started)


def print_summary(steps: Sequence[Step], seconds: float) -> int:
    """Print the outcome of every step; 0 if all passed, else 1 with a line naming the failed steps."""
    width = max(len(step.title) for step in steps)
    print("summary", flush=True)
    for step in steps:
        mark = "ok  " if step.status == "ok" else "FAIL"
        print(f"  {mark}  {step.title:<{width}}  {step.seconds:5.1f} s  {step.detail}", flush=True)
    failed = [step for step in steps if step.status != "ok"]
    if not failed:
        print(f"all {len(steps)} steps passed in {seconds:.1f} s", flush=True)
        return 0
    named = "; ".join(f"step {step.title} ({step.detail})" for step in failed)
    print(f"rtcstack: error: the demo failed: {named}", file=sys.stderr, flush=True)
    return 1
