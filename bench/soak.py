"""Fault soak: N calls on one LoopbackServer for a while, under random faults, with invariants checked throughout.

`python -m bench.soak [--calls 5] [--seconds 60] [--seed 1]`, or `scripts/soak` (which runs it inside a private
network namespace: libwebrtc ignores ``lo``). Faults, at random moments and on random calls:

- signal drops (the SDK resumes), server leaves with a transient reason (server_shutdown, unknown: the call
  rejoins with a fresh Room), leaves asking for a resume or a full reconnect;
- refused joins for a while (a transient leave whose first rejoins are answered 503; now and then a signal drop
  whose resumes are all refused, so that the SDK gives up and the call rejoins);
- quality churn, synthetic participants joining and leaving, and token churn: short TTLs, a refresher that now and
  then fails for a few seconds, and no token pushes from the server (``token_refresh=False``).

Every kind of fault is injected once first (the refused resumes, which take longest, at the start), then at
random by weight.

Checked: each call's events keep the machine's invariants (`Invariants`); each transient fault ends in
``reconnected`` within `recovery_bound` (a policy invariant: the SDK's own resume budget, the policy's ``timeout``,
its last delay and one connect; a fault that ends a call instead is a violation); no reconnect begins without a
fault behind it (``unprovoked_episodes``); every kind of fault was injected; and once things settle, the roster
each call sees is the server's (``server.participants(room)``, without the call itself). Prints the faults
injected, the recoveries, the worst recovery time and the violations (exit status 1 if there is any).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from rtcstack import Call, CallEvent, CallOptions, ConnectionStateName, ReconnectPolicy, create_call
from rtcstack.testing import LoopbackServer

__all__ = ["LEGAL_TRANSITIONS", "Invariants", "Report", "main", "recovery_bound", "soak"]

ROOM = "soak"
POLICY = ReconnectPolicy(initial_delay=0.2, max_delay=2.0, max_attempts=None, timeout=60.0)
CONNECT_TIMEOUT = 10.0
SDK_RESUME_BUDGET = 45.0
"""The SDK's own resume, before it gives up and the call rejoins: ~30 s of refused resumes, measured."""
TOKEN_TTL = (20.0, 40.0)
REFRESH_MARGIN = 8.0
SETTLE = 15.0
"""How long a settled call may take to show a roster change made just before the check."""

LEGAL_TRANSITIONS: frozenset[tuple[ConnectionStateName, ConnectionStateName]] = frozenset(
    {
        ("idle", "connecting"),
        ("connecting", "connected"),
        ("connecting", "disconnected"),
        ("connected", "reconnecting"),
        ("reconnecting", "connected"),
        ("connected", "disconnected"),
        ("reconnecting", "disconnected"),
        ("disconnected", "connecting"),
    }
)


def recovery_bound(policy: ReconnectPolicy, connect_timeout: float) -> float:
    """The longest a reconnect episode can last before it ends, by the policy: the SDK's own resume, then rejoins
    until the policy's ``timeout``, the last of them starting up to ``max_delay`` after it and taking up to one
    connect. Past this the call must be ``connected`` again (or have ended, which for a transient fault is a
    violation of its own)."""
    assert policy.timeout is not None
    return SDK_RESUME_BUDGET + policy.timeout + policy.max_delay + connect_timeout


class Invariants:
    """Checks one call's event sequence as it comes; what breaks a rule is added to ``violations``.

    Legal transitions only, ``state_changed`` carries (new, the actual previous state), ``connected`` /
    ``reconnected`` / ``disconnected`` follow the matching state change (roster events may come between: the
    roster is reconciled before ``reconnected``), attempts count 1, 2, 3... within an episode, every episode
    ends in exactly one ``reconnected`` or ``disconnected``, every session in exactly one ``disconnected``.
    """

    LIFECYCLE = frozenset({"state_changed", "connected", "reconnecting", "reconnected", "disconnected"})

    def __init__(self, label: str) -> None:
        self.label = label
        self.state: ConnectionStateName = "idle"
        self.in_session = False
        self.in_episode = False
        self.attempt = 0
        self.sessions = 0
        self.violations: list[str] = []
        self._last: tuple[str, tuple[object, ...]] | None = None

    def see(self, name: str, args: tuple[object, ...]) -> None:
        if name not in self.LIFECYCLE:
            return
        last, self._last = self._last, (name, args)
        if name == "state_changed":
            new, previous = args
            if previous != self.state or (previous, new) not in LEGAL_TRANSITIONS:
                self._fail(f"state_changed{args} while {self.state}")
            self.state = new  # type: ignore[assignment]  # a state name: checked against the table above
            if new == "connecting":
                if self.in_session:
                    self._fail("a new session before the last one ended")
                self.in_session, self.sessions = True, self.sessions + 1
        elif name == "connected":
            if last != ("state_changed", ("connected", "connecting")):
                self._fail(f"connected after {last}")
        elif name == "reconnecting":
            (attempt,) = args
            expected = self.attempt + 1 if self.in_episode else 1
            if self.state != "reconnecting" or attempt != expected:
                self._fail(f"reconnecting({attempt}) while {self.state}, expected attempt {expected}")
            self.in_episode, self.attempt = True, expected
        elif name == "reconnected":
            if last != ("state_changed", ("connected", "reconnecting")) or not self.in_episode:
                self._fail(f"reconnected after {last}")
            self.in_episode, self.attempt = False, 0
        elif name == "disconnected":
            if last is None or last[0] != "state_changed" or last[1][0] != "disconnected" or not self.in_session:
                self._fail(f"disconnected{args} after {last}")
            self.in_session, self.in_episode, self.attempt = False, False, 0

    def _fail(self, what: str) -> None:
        self.violations.append(f"{self.label}: {what}")


@dataclass
class Member:
    """One call of the soak, what it saw, and the fault it is recovering from."""

    identity: str
    call: Call
    invariants: Invariants
    refresher_broken_until: float = 0.0
    fault: tuple[str, float] | None = None
    episodes: int = 0
    closing: bool = False


@dataclass
class Report:
    """What a soak did and found."""

    calls: int
    seconds: float
    faults: Counter[str] = field(default_factory=Counter)
    recoveries: int = 0
    recovery_times: list[float] = field(default_factory=list)
    unprovoked_episodes: int = 0
    token_refreshes: int = 0
    token_refresh_failures: int = 0
    roster_checks: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def worst_recovery(self) -> float:
        return max(self.recovery_times, default=0.0)


RECOVERABLE = ("drop_signal", "leave_transient", "leave_resume", "leave_reconnect", "refused_rejoin", "refused_resume")
REFUSALS = ("refused_rejoin", "refused_resume")
"""Faults that refuse one call's joins: one at a time (`refuse_joins` holds one refusal)."""
WEIGHTS: dict[str, float] = {
    "drop_signal": 3,
    "leave_transient": 2,
    "leave_resume": 1,
    "leave_reconnect": 1,
    "refused_rejoin": 2,
    "refused_resume": 0.3,
    "quality": 3,
    "bot": 2,
    "refresher_outage": 1,
}


class CallbackErrors(logging.Handler):
    """Collects what says a callback raised: a handler error logged by rtcstack, or the SDK's "failed to emit
    event" (one of the call's Room callbacks raised, so the call missed that event)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.name.startswith("rtcstack") or message.startswith("failed to emit event"):
            where = traceback.format_exception(*record.exc_info)[-3:] if record.exc_info else []
            self.errors.append(f"{record.name}: {message} {''.join(where).strip()}")


class Soak:
    def __init__(self, server: LoopbackServer, calls: int, seconds: float, seed: int) -> None:
        self.server = server
        self.rng = random.Random(seed)
        self.seconds = seconds
        self.report = Report(calls=calls, seconds=seconds)
        self.members: list[Member] = []
        self.bound = recovery_bound(POLICY, CONNECT_TIMEOUT)
        self.refusing: Member | None = None
        self.bots: list[str] = []
        self.bot_count = 0
        rest = [kind for kind in WEIGHTS if kind != "refused_resume"]
        self.rng.shuffle(rest)
        self.schedule = ["refused_resume", *rest]
        """Kinds injected once each before the random ones, in this order (one refusal at a time)."""
        self._watchers: list[asyncio.Task[None]] = []
        for i in range(calls):
            identity = f"call-{i}"
            call = create_call(
                server.url,
                self._mint(identity),
                token_refresher=self._refresher(identity),
                options=CallOptions(
                    connect_timeout=CONNECT_TIMEOUT,
                    reconnect=POLICY,
                    token_refresh_margin=REFRESH_MARGIN,
                    token_refresh_timeout=2.0,
                ),
            )
            self.members.append(Member(identity, call, Invariants(identity)))

    def _mint(self, identity: str) -> str:
        return self.server.token(identity, room=ROOM, ttl=self.rng.uniform(*TOKEN_TTL))

    def _refresher(self, identity: str) -> Callable[[], str]:
        def refresh() -> str:
            member = next(m for m in self.members if m.identity == identity)
            if time.monotonic() < member.refresher_broken_until:
                raise RuntimeError("token service unavailable (injected)")
            return self._mint(identity)

        return refresh

    # -- watching ------------------------------------------------------------------------------------------------

    async def _watch(self, member: Member, events: AsyncIterator[CallEvent]) -> None:
        async for event in events:
            member.invariants.see(event.name, event.args)
            now = time.monotonic()
            if event.name == "reconnecting" and event.attempt == 1:
                member.episodes += 1
                if member.fault is None:
                    self.report.unprovoked_episodes += 1
            elif event.name == "reconnected" and member.fault is not None:
                self.report.recoveries += 1
                self.report.recovery_times.append(now - member.fault[1])
                member.fault = None
                if self.refusing is member:
                    self.server.refuse_joins(count=0)
                    self.refusing = None
            elif event.name == "token_refreshed":
                self.report.token_refreshes += 1
            elif event.name == "token_refresh_failed":
                self.report.token_refresh_failures += 1
            elif event.name == "disconnected" and not member.closing:
                self._violation(f"{member.identity}: the call ended ({event.reason}) after {member.fault}")

    def _violation(self, what: str) -> None:
        self.report.violations.append(what)

    def _check_bounds(self) -> None:
        now = time.monotonic()
        for member in self.members:
            if member.fault is not None and now - member.fault[1] > self.bound:
                self._violation(f"{member.identity}: not connected {self.bound:g} s after {member.fault[0]}")
                member.fault = None

    # -- faults --------------------------------------------------------------------------------------------------

    def _idle(self) -> list[Member]:
        return [m for m in self.members if m.fault is None and m.call.connection_state == "connected"]

    def _next_kind(self) -> str:
        """The first kind of the schedule not injected yet (and possible now), else one drawn by weight."""
        for kind in self.schedule:
            if not self.report.faults[kind] and not (kind in REFUSALS and self.refusing is not None):
                return kind
        kinds = list(WEIGHTS)
        kind = self.rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        if kind in REFUSALS and self.refusing is not None:
            kind = "drop_signal"
        return kind

    async def _inject(self) -> None:
        kind = self._next_kind()
        if kind == "quality":
            target = self.rng.choice(self.members)
            with contextlib.suppress(LookupError):
                quality = self.rng.choice(["excellent", "good", "poor", "lost"])
                await self.server.set_connection_quality(target.identity, quality)
                self.report.faults[kind] += 1
            return
        if kind == "bot":
            if self.bots and self.rng.random() < 0.5:
                await self.server.remove_participant(ROOM, self.bots.pop(self.rng.randrange(len(self.bots))))
            else:
                self.bot_count += 1
                self.bots.append(f"bot-{self.bot_count}")
                await self.server.add_participant(ROOM, self.bots[-1], kind="agent")
            self.report.faults[kind] += 1
            return
        if kind == "refresher_outage":
            target = self.rng.choice(self.members)
            target.refresher_broken_until = time.monotonic() + self.rng.uniform(1.0, REFRESH_MARGIN / 2)
            self.report.faults[kind] += 1
            return
        idle = self._idle()
        if not idle:
            return
        target = self.rng.choice(idle)
        try:
            await self._disrupt(kind, target)
        except LookupError:  # the server does not have it right now (its session is being replaced)
            if self.refusing is target:
                self.server.refuse_joins(count=0)
                self.refusing = None
            return
        target.fault = (kind, time.monotonic())
        self.report.faults[kind] += 1

    async def _disrupt(self, kind: str, target: Member) -> None:
        identity = target.identity
        if kind == "drop_signal":
            await self.server.drop_signal(identity)
        elif kind == "leave_transient":
            await self.server.leave(identity, reason=self.rng.choice(["server_shutdown", "unknown"]))
        elif kind == "leave_resume":
            await self.server.leave(identity, reason="unknown", action="resume")
        elif kind == "leave_reconnect":
            await self.server.leave(identity, reason="unknown", action="reconnect")
        elif kind == "refused_rejoin":
            self.refusing = target
            self.server.refuse_joins(count=self.rng.randint(1, 5), status=503, identity=identity)
            await self.server.leave(identity, reason="server_shutdown")
        elif kind == "refused_resume":
            self.refusing = target
            self.server.refuse_joins(count=1000, status=503, identity=identity)
            await self.server.drop_signal(identity)
            self._stop_refusing_later(target)

    def _stop_refusing_later(self, target: Member) -> None:
        """Refuse the resumes until the SDK gives up and the call starts rejoining (attempt 2), then let it in."""

        async def stop() -> None:
            with contextlib.suppress(TimeoutError):
                while target.call.reconnect_attempt < 2:
                    await target.call.wait_for("reconnecting", timeout=self.bound)
            if self.refusing is target:
                self.server.refuse_joins(count=0)
                self.refusing = None

        self._watchers.append(asyncio.ensure_future(stop()))

    # -- settling ------------------------------------------------------------------------------------------------

    async def _quiet(self) -> None:
        """Wait (bounded) until no fault is pending and every call is connected."""
        deadline = time.monotonic() + self.bound + 5
        while time.monotonic() < deadline:
            self._check_bounds()
            if all(m.fault is None and m.call.connection_state == "connected" for m in self.members):
                return
            await asyncio.sleep(0.2)
        self._violation("the calls did not all settle connected")

    def _roster_gaps(self) -> list[str]:
        present = set(self.server.participants(ROOM))
        gaps = []
        for member in self.members:
            seen = {p.identity for p in member.call.participants}
            expected = present - {member.identity}
            if seen != expected:
                gaps.append(f"{member.identity}: sees {sorted(seen)}, server has {sorted(expected)}")
        return gaps

    async def _check_roster(self) -> None:
        await self._quiet()
        self.report.roster_checks += 1
        deadline = time.monotonic() + SETTLE
        while gaps := self._roster_gaps():
            if time.monotonic() >= deadline:
                self.report.violations += [f"roster: {gap}" for gap in gaps]
                return
            await asyncio.sleep(0.2)

    # -- the run -------------------------------------------------------------------------------------------------

    async def run(self, progress: Callable[[str], None] | None = None) -> Report:
        callbacks = CallbackErrors()
        for name in ("livekit", "rtcstack"):
            logging.getLogger(name).addHandler(callbacks)
        try:
            await self._run(progress)
        finally:
            for name in ("livekit", "rtcstack"):
                logging.getLogger(name).removeHandler(callbacks)
        self.report.violations += callbacks.errors
        return self.report

    async def _run(self, progress: Callable[[str], None] | None) -> None:
        for member in self.members:
            self._watchers.append(asyncio.ensure_future(self._watch(member, member.call.events())))
            await member.call.connect()
        start = time.monotonic()
        next_check = start + 20.0
        try:
            while (now := time.monotonic()) < start + self.seconds:
                await asyncio.sleep(self.rng.uniform(0.3, 2.0))
                await self._inject()
                self._check_bounds()
                if now >= next_check:
                    await self._check_roster()
                    next_check = time.monotonic() + 20.0
                    if progress is not None:
                        progress(f"{now - start:6.0f} s: {render_line(self.report)}")
            await self._check_roster()
        finally:
            for member in self.members:
                member.closing = True
            await asyncio.gather(*(m.call.disconnect() for m in self.members))
            for watcher in self._watchers:
                watcher.cancel()
            await asyncio.gather(*self._watchers, return_exceptions=True)
        for member in self.members:
            self.report.violations += member.invariants.violations
            if member.call.disconnect_reason != "client_initiated" or member.invariants.in_session:
                self._violation(f"{member.identity}: ended {member.call.disconnect_reason}, not client_initiated")
        if self.report.unprovoked_episodes:
            self._violation(f"{self.report.unprovoked_episodes} reconnect episodes began with no fault behind them")
        if missing := [kind for kind in WEIGHTS if not self.report.faults[kind]]:
            self._violation(f"fault kinds never injected: {', '.join(missing)}")


async def soak(
    server: LoopbackServer,
    *,
    calls: int,
    seconds: float,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run the soak on ``server`` (which must not push tokens: ``token_refresh=False``)."""
    return await Soak(server, calls, seconds, seed).run(progress)


def render_line(report: Report) -> str:
    return (
        f"faults {sum(report.faults.values())}, recoveries {report.recoveries}, "
        f"worst recovery {report.worst_recovery:.2f} s, violations {len(report.violations)}"
    )


def render(report: Report) -> str:
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(report.faults.items()))
    lines = [
        f"{report.calls} calls, {report.seconds:g} s",
        f"faults injected: {sum(report.faults.values())} ({kinds})",
        f"recoveries: {report.recoveries} (of {sum(report.faults[k] for k in RECOVERABLE)} transient faults), "
        f"worst recovery time {report.worst_recovery:.2f} s "
        f"(bound by the policy: {recovery_bound(POLICY, CONNECT_TIMEOUT):g} s)",
        f"episodes without a fault: {report.unprovoked_episodes}; token refreshes {report.token_refreshes}, "
        f"refresh failures {report.token_refresh_failures}; roster checks {report.roster_checks}",
        f"violations: {len(report.violations)}",
        *(f"  {violation}" for violation in report.violations),
    ]
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> Report:
    async with LoopbackServer(token_refresh=False, ping_interval=1, ping_timeout=15, departure_timeout=20.0) as server:
        return await soak(
            server,
            calls=args.calls,
            seconds=args.seconds,
            seed=args.seed,
            progress=lambda text: print(text, file=sys.stderr, flush=True),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5, help="calls in the room (default 5)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to inject faults (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the faults (default 1)")
    args = parser.parse_args(argv)
    report = asyncio.run(_main(args))
    print(render(report))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
