"""The call's lifecycle as a pure state machine: inputs in, outputs out, no I/O.

The pump (`_call.Call`) turns Room callbacks, timers and user calls into the small input dataclasses below and feeds
them to `CallMachine.handle()`, which returns what to do: events to emit (`Emit`), rejoins to schedule
(`ScheduleRejoin`), and where the call's life turns (`SessionStarted`, `EpisodeStarted`, `EpisodeEnded`, `CallEnded`:
the other parts of the call act on these, never on the names of emitted events). Time comes in with the inputs
(`now`, monotonic seconds), so the machine can be driven by a table in tests with no clock and no event loop.

States and the legal transitions::

    idle ──connect──▶ connecting ──ok──▶ connected ◀──────────────┐
      ▲                  │                  │ sdk resume/restart    │ reconnected
      │                  │ failed           ▼  or transient end     │
      │                  │            reconnecting ──rejoin ok──────┘
      │                  ▼                  │ terminal, exhausted or disconnect()
      └── connect ── disconnected ◀─────────┘

`reconnect_attempt` counts the attempts of one episode: the SDK's own resume or restart is attempt 1; each rejoin
the call makes with a fresh Room after the SDK gave up is the next one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from ._errors import InvalidStateError
from ._models import Participant
from ._vocab import ConnectionStateName, DisconnectReason, EventName

__all__ = [
    "CallEnded",
    "CallMachine",
    "ConnectFailed",
    "ConnectRequested",
    "DisconnectRequested",
    "Emit",
    "EpisodeEnded",
    "EpisodeStarted",
    "Input",
    "Left",
    "Output",
    "RejoinFailed",
    "RetryPolicy",
    "ScheduleRejoin",
    "SdkConnected",
    "SdkDisconnected",
    "SdkReconnecting",
    "SessionStarted",
]

logger = logging.getLogger("rtcstack")


class RetryPolicy(Protocol):
    """What the machine asks of a reconnect policy (`ReconnectPolicy` satisfies it)."""

    def next_delay(self, attempt: int, elapsed: float, cause: DisconnectReason) -> float | None: ...


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """The user called `connect()`."""


@dataclass(frozen=True, slots=True)
class SdkConnected:
    """The Room of the current session reports CONN_CONNECTED (first connect, resume or rejoin)."""


@dataclass(frozen=True, slots=True)
class SdkReconnecting:
    """The SDK started its own resume or full restart."""

    now: float


@dataclass(frozen=True, slots=True)
class SdkDisconnected:
    """The Room ended. `transient` reasons are worth a rejoin; the others end the call."""

    reason: DisconnectReason
    transient: bool
    now: float


@dataclass(frozen=True, slots=True)
class RejoinFailed:
    """A rejoin with a fresh Room failed."""

    reason: DisconnectReason
    transient: bool
    now: float


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """The first connect failed (error, timeout, cancellation, unusable token)."""

    reason: DisconnectReason


@dataclass(frozen=True, slots=True)
class DisconnectRequested:
    """The user called `disconnect()`, or the call ends for a reason found outside the Room (token)."""

    reason: DisconnectReason = "client_initiated"


Input: TypeAlias = (
    ConnectRequested
    | SdkConnected
    | SdkReconnecting
    | SdkDisconnected
    | RejoinFailed
    | ConnectFailed
    | DisconnectRequested
)


@dataclass(frozen=True, slots=True)
class Emit:
    """Emit this event with these arguments."""

    name: EventName
    args: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class ScheduleRejoin:
    """Rejoin with a fresh Room after `delay` seconds; this is attempt `attempt` of the episode."""

    attempt: int
    delay: float


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """The call is connected for the first time in this session (before `connected` is emitted)."""


@dataclass(frozen=True, slots=True)
class EpisodeStarted:
    """A reconnect episode began (before its first `reconnecting` is emitted)."""


@dataclass(frozen=True, slots=True)
class EpisodeEnded:
    """The reconnect episode ended with the call back (before `reconnected` is emitted)."""


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call ended (before `disconnected` is emitted)."""


@dataclass(frozen=True, slots=True)
class Left:
    """`participant` left for real (an output of the roster): what they sent ends, then `participant_left`."""

    participant: Participant


Output: TypeAlias = Emit | ScheduleRejoin | SessionStarted | EpisodeStarted | EpisodeEnded | CallEnded | Left


class CallMachine:
    """The lifecycle of one call. Every state change goes through `_set_state`, which logs it."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self.state: ConnectionStateName = "idle"
        self.reconnect_attempt = 0
        self.disconnect_reason: DisconnectReason | None = None
        self._rejoins = 0
        self._episode_start = 0.0

    def handle(self, event: Input) -> list[Output]:
        """Feed one input; returns the outputs in the order they must be carried out.

        Raises `InvalidStateError` only for user requests that the state forbids (`connect()` while a session is
        live); inputs from the SDK that no longer apply (a stale Room, a late callback) are ignored.
        """
        out: list[Output] = []
        state = self.state
        if isinstance(event, ConnectRequested):
            if state not in ("idle", "disconnected"):
                raise InvalidStateError(f"connect() called while {state}")
            self.disconnect_reason = None
            self.reconnect_attempt = 0
            self._set_state("connecting", "connect requested", out)
        elif isinstance(event, SdkConnected):
            if state == "connecting":
                self._set_state("connected", "sdk connected", out)
                out.append(SessionStarted())
                out.append(Emit("connected"))
            elif state == "reconnecting":
                self._end_episode(out)
        elif isinstance(event, SdkReconnecting):
            if state == "connected":
                self._episode_start = event.now
                self._rejoins = 0
                self.reconnect_attempt = 1
                self._set_state("reconnecting", "sdk reconnecting", out)
                out.append(EpisodeStarted())
                out.append(Emit("reconnecting", (1,)))
        elif isinstance(event, SdkDisconnected) and state == "connecting":
            self._end(event.reason, out)
        elif isinstance(event, SdkDisconnected | RejoinFailed):
            if state == "connected":
                self._episode_start = event.now
                self._rejoins = 0
            if state in ("connected", "reconnecting"):
                self._after_failure(event, out)
        elif isinstance(event, ConnectFailed):
            if state == "connecting":
                self._end(event.reason, out)
        elif state != "disconnected" and state != "idle":
            self._end(event.reason, out)
        return out

    def _after_failure(self, event: SdkDisconnected | RejoinFailed, out: list[Output]) -> None:
        if not event.transient:
            self._end(event.reason, out)
            return
        delay = self._policy.next_delay(self._rejoins + 1, event.now - self._episode_start, event.reason)
        if delay is None:
            self._end("network_error", out)
            return
        self._rejoins += 1
        self.reconnect_attempt += 1
        if self.state != "reconnecting":
            self._set_state("reconnecting", f"transient end ({event.reason})", out)
            out.append(EpisodeStarted())
        out.append(Emit("reconnecting", (self.reconnect_attempt,)))
        out.append(ScheduleRejoin(self.reconnect_attempt, max(0.0, delay)))

    def _end_episode(self, out: list[Output]) -> None:
        self.reconnect_attempt = 0
        self._rejoins = 0
        self._set_state("connected", "reconnected", out)
        out.append(EpisodeEnded())
        out.append(Emit("reconnected"))

    def _end(self, reason: DisconnectReason, out: list[Output]) -> None:
        self.disconnect_reason = reason
        self.reconnect_attempt = 0
        self._set_state("disconnected", reason, out)
        out.append(CallEnded())
        out.append(Emit("disconnected", (reason,)))

    def _set_state(self, new: ConnectionStateName, cause: str, out: list[Output]) -> None:
        old = self.state
        logger.debug("call state %s -> %s (%s)", old, new, cause)
        self.state = new
        out.append(Emit("state_changed", (new, old)))
