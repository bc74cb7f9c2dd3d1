"""Fuzzing with hypothesis: random input sequences keep the call machine's invariants; random strings and
JWT-shaped garbage make the token decoder raise `TokenError` and nothing else."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.soak import Invariants
from rtcstack._errors import InvalidStateError, TokenError, TokenRefreshError
from rtcstack._machine import (
    CallEnded,
    CallMachine,
    ConnectFailed,
    ConnectRequested,
    DisconnectRequested,
    Emit,
    EpisodeEnded,
    EpisodeStarted,
    Input,
    RejoinFailed,
    ScheduleRejoin,
    SdkConnected,
    SdkDisconnected,
    SdkReconnecting,
    SessionStarted,
)
from rtcstack._options import ReconnectPolicy
from rtcstack._tokens import TokenClaims, check_refreshed, decode_token
from rtcstack._vocab import DISCONNECT_REASONS, ConnectionStateName

# -- the call machine --------------------------------------------------------------------------------------------

LIVE: frozenset[ConnectionStateName] = frozenset({"connecting", "connected", "reconnecting"})

reasons = st.sampled_from(DISCONNECT_REASONS)
steps = st.one_of(
    st.tuples(st.just("connect")),
    st.tuples(st.just("sdk_connected")),
    st.tuples(st.just("sdk_reconnecting"), st.floats(0, 30)),
    st.tuples(st.just("sdk_disconnected"), st.floats(0, 30), reasons, st.booleans()),
    st.tuples(st.just("rejoin_failed"), st.floats(0, 30), reasons, st.booleans()),
    st.tuples(st.just("connect_failed"), reasons),
    st.tuples(st.just("disconnect"), reasons),
)


@st.composite
def policies(draw: st.DrawFn) -> ReconnectPolicy:
    initial = draw(st.floats(0, 2))
    return ReconnectPolicy(
        max_attempts=draw(st.none() | st.integers(1, 6)),
        timeout=draw(st.none() | st.floats(0.5, 120)),
        initial_delay=initial,
        max_delay=draw(st.floats(initial, initial + 10)),
        multiplier=draw(st.floats(1, 4)),
        jitter=draw(st.booleans()),
    )


def to_inputs(raw: list[tuple[Any, ...]]) -> list[Input]:
    """Turn drawn steps into machine inputs; time (monotonic seconds) only moves forward."""
    now, inputs = 0.0, list[Input]()
    for step in raw:
        kind = step[0]
        if kind in ("sdk_reconnecting", "sdk_disconnected", "rejoin_failed"):
            now += step[1]
        if kind == "connect":
            inputs.append(ConnectRequested())
        elif kind == "sdk_connected":
            inputs.append(SdkConnected())
        elif kind == "sdk_reconnecting":
            inputs.append(SdkReconnecting(now))
        elif kind == "sdk_disconnected":
            inputs.append(SdkDisconnected(step[2], step[3], now))
        elif kind == "rejoin_failed":
            inputs.append(RejoinFailed(step[2], step[3], now))
        elif kind == "connect_failed":
            inputs.append(ConnectFailed(step[1]))
        else:
            inputs.append(DisconnectRequested(step[1]))
    return inputs


@dataclass
class Observer:
    """Replays the machine's outputs: the events through `Invariants` (the soak's checker of a call's events),
    the rejoins and the machine's own properties against what was emitted."""

    max_attempts: int | None
    events: Invariants = field(default_factory=lambda: Invariants("machine"))
    rejoins: int = 0
    turn: object = None

    def feed(self, machine: CallMachine, event: Input) -> None:
        before = machine.state
        try:
            outputs = machine.handle(event)
        except InvalidStateError:
            assert isinstance(event, ConnectRequested) and before in LIVE and machine.state == before
            return
        for out in outputs:
            if isinstance(out, ScheduleRejoin):
                self.rejoins += 1
                assert self.events.in_episode and out.attempt == self.events.attempt and out.delay >= 0
                assert self.max_attempts is None or self.rejoins <= self.max_attempts
            elif isinstance(out, Emit):
                starts_episode = out.name == "reconnecting" and not self.events.in_episode
                expected = _TURNS.get(out.name) if out.name != "reconnecting" or starts_episode else None
                assert self.turn == expected, out
                self.turn = None
                if out.name == "reconnecting" and out.args == (1,):
                    self.rejoins = 0
                self.events.see(out.name, out.args)
            else:
                assert self.turn is None, "a turn of the call's life not followed by its event"
                self.turn = out
        assert self.events.violations == []
        assert machine.state == self.events.state
        assert machine.reconnect_attempt == (self.events.attempt if machine.state == "reconnecting" else 0)
        assert (machine.disconnect_reason is not None) == (machine.state == "disconnected")


_TURNS: dict[str, object] = {
    "connected": SessionStarted(),
    "reconnecting": EpisodeStarted(),
    "reconnected": EpisodeEnded(),
    "disconnected": CallEnded(),
}
"""The output that comes just before each of these events (`reconnecting`: the first of an episode) and no other."""


@settings(max_examples=400)
@given(policy=policies(), raw=st.lists(steps, max_size=40))
def test_random_inputs_keep_the_machine_invariants(policy: ReconnectPolicy, raw: list[tuple[Any, ...]]) -> None:
    """Legal transitions only, `state_changed` carries (new, previous) of the real previous state, attempts count
    1, 2, 3... within an episode, every episode ends in one `reconnected` or `disconnected`, and every session in
    exactly one `disconnected` (the last input ends the session that may still be live)."""
    machine = CallMachine(policy)
    observer = Observer(policy.max_attempts)
    for event in [*to_inputs(raw), DisconnectRequested()]:
        observer.feed(machine, event)
    assert not observer.events.in_session and not observer.events.in_episode
    assert machine.state in ("idle", "disconnected")
    assert (machine.state == "disconnected") == (observer.events.sessions > 0)


# -- the token decoder -------------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
claim_values = st.one_of(json_values, st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True))


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """Payloads near a real one: each LiveKit claim present or not, with a plausible or a random value."""
    payload: dict[str, Any] = {}
    options: dict[str, st.SearchStrategy[Any]] = {
        "sub": st.text(max_size=12) | claim_values,
        "exp": st.integers(0, 2**40) | claim_values,
        "nbf": st.integers(0, 2**40) | claim_values,
        "name": st.text(max_size=12) | claim_values,
        "kind": st.sampled_from(["", "agent", "standard"]) | claim_values,
        "video": st.fixed_dictionaries({"room": st.text(max_size=12) | claim_values}) | claim_values,
    }
    for claim, values in options.items():
        if draw(st.booleans()):
            payload[claim] = draw(values)
    return payload


def segment_of(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


segments = st.one_of(
    st.builds(b64, st.binary(max_size=64)),
    st.builds(lambda v: b64(segment_of(v)), json_values),
    st.builds(lambda v: b64(segment_of(v)), payloads()),
    st.builds(lambda n: b64(b"[" * n + b"]" * n), st.integers(1, 5000)),
    st.text(max_size=24),
)
jwt_shaped = st.one_of(
    st.builds(lambda h, p, s: f"{h}.{p}.{s}", segments, segments, segments),
    st.builds(lambda h, p, s: f"{h}.{p}.{s}", st.just(b64(b'{"alg":"HS256"}')), segments, st.just("c2ln")),
    st.builds(".".join, st.lists(segments, max_size=5)),
)
anything = st.one_of(
    st.text(),
    st.binary().map(lambda raw: raw.decode("latin-1")),
    jwt_shaped,
    st.none() | st.integers() | st.binary() | st.lists(st.text(max_size=3), max_size=3),
)


def check_claims(claims: TokenClaims) -> None:
    assert isinstance(claims.identity, str) and claims.identity
    assert isinstance(claims.room, str) and claims.room
    assert claims.expires_at.tzinfo is timezone.utc
    assert claims.not_before is None or claims.not_before.tzinfo is timezone.utc
    assert isinstance(claims.name, str) and (claims.kind is None or isinstance(claims.kind, str))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(token=anything)
def test_decode_token_raises_only_token_error(token: Any) -> None:
    try:
        claims = decode_token(token)
    except TokenError as exc:
        assert not isinstance(exc, TokenRefreshError) and exc.reason is None
        if isinstance(token, str) and len(token) >= 16:
            assert token not in str(exc)
        return
    check_claims(claims)


CURRENT = TokenClaims(
    identity="alice",
    room="demo",
    name="",
    expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
    not_before=None,
    kind=None,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(token=st.one_of(anything, st.builds(lambda p: f"e30.{b64(segment_of(p))}.c2ln", payloads())))
def test_a_refreshed_token_is_accepted_or_refused_with_token_refresh_error(token: Any) -> None:
    try:
        claims = check_refreshed(CURRENT, token)
    except TokenRefreshError:
        return
    check_claims(claims)
    assert (claims.identity, claims.room) == ("alice", "demo") and claims.expires_at > CURRENT.expires_at
