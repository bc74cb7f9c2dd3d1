"""The pure call state machine, driven by tables: inputs in, outputs out."""

from __future__ import annotations

import pytest

from rtcstack._errors import InvalidStateError
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
    Output,
    RejoinFailed,
    ScheduleRejoin,
    SdkConnected,
    SdkDisconnected,
    SdkReconnecting,
    SessionStarted,
)
from rtcstack._vocab import ConnectionStateName, DisconnectReason


class FixedPolicy:
    """Gives `delays[attempt - 1]`, None past the end; records what it was asked."""

    def __init__(self, *delays: float) -> None:
        self.delays = delays
        self.asked: list[tuple[int, float, DisconnectReason]] = []

    def next_delay(self, attempt: int, elapsed: float, cause: DisconnectReason) -> float | None:
        self.asked.append((attempt, elapsed, cause))
        return self.delays[attempt - 1] if attempt <= len(self.delays) else None


def sc(new: ConnectionStateName, old: ConnectionStateName) -> Emit:
    return Emit("state_changed", (new, old))


def drive(machine: CallMachine, *inputs: Input) -> list[Output]:
    out: list[Output] = []
    for event in inputs:
        out.extend(machine.handle(event))
    return out


def connected(policy: FixedPolicy | None = None) -> CallMachine:
    machine = CallMachine(policy or FixedPolicy())
    drive(machine, ConnectRequested(), SdkConnected())
    return machine


CASES: list[tuple[str, list[Input], list[Output], ConnectionStateName]] = [
    ("connect", [ConnectRequested()], [sc("connecting", "idle")], "connecting"),
    (
        "connect ok",
        [ConnectRequested(), SdkConnected()],
        [sc("connecting", "idle"), sc("connected", "connecting"), SessionStarted(), Emit("connected")],
        "connected",
    ),
    (
        "connect failed",
        [ConnectRequested(), ConnectFailed("auth_rejected")],
        [
            sc("connecting", "idle"),
            sc("disconnected", "connecting"),
            CallEnded(),
            Emit("disconnected", ("auth_rejected",)),
        ],
        "disconnected",
    ),
    (
        "disconnect while connecting",
        [ConnectRequested(), DisconnectRequested()],
        [
            sc("connecting", "idle"),
            sc("disconnected", "connecting"),
            CallEnded(),
            Emit("disconnected", ("client_initiated",)),
        ],
        "disconnected",
    ),
    ("disconnect when idle is nothing", [DisconnectRequested()], [], "idle"),
    ("sdk events when idle are ignored", [SdkConnected(), SdkReconnecting(0.0)], [], "idle"),
    (
        "sdk disconnect while connecting ends the call with its reason",
        [ConnectRequested(), SdkDisconnected("duplicate_identity", False, 0.0)],
        [
            sc("connecting", "idle"),
            sc("disconnected", "connecting"),
            CallEnded(),
            Emit("disconnected", ("duplicate_identity",)),
        ],
        "disconnected",
    ),
    (
        "even a transient one: connect reports it",
        [ConnectRequested(), SdkDisconnected("unknown", True, 0.0)],
        [sc("connecting", "idle"), sc("disconnected", "connecting"), CallEnded(), Emit("disconnected", ("unknown",))],
        "disconnected",
    ),
    (
        "a rejoin failure while connecting is ignored",
        [ConnectRequested(), RejoinFailed("unknown", True, 0.0)],
        [sc("connecting", "idle")],
        "connecting",
    ),
    (
        "sdk reconnecting while connecting is ignored",
        [ConnectRequested(), SdkReconnecting(0.0)],
        [sc("connecting", "idle")],
        "connecting",
    ),
    (
        "a late connect failure after connected is ignored",
        [ConnectRequested(), SdkConnected(), ConnectFailed("connect_timeout")],
        [sc("connecting", "idle"), sc("connected", "connecting"), SessionStarted(), Emit("connected")],
        "connected",
    ),
]


@pytest.mark.parametrize(("inputs", "expected", "final"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_table(inputs: list[Input], expected: list[Output], final: ConnectionStateName) -> None:
    machine = CallMachine(FixedPolicy())
    assert drive(machine, *inputs) == expected
    assert machine.state == final


def test_sdk_resume_is_attempt_one() -> None:
    machine = connected()
    assert machine.handle(SdkReconnecting(5.0)) == [
        sc("reconnecting", "connected"),
        EpisodeStarted(),
        Emit("reconnecting", (1,)),
    ]
    assert machine.reconnect_attempt == 1
    assert machine.handle(SdkReconnecting(6.0)) == []
    assert machine.handle(SdkConnected()) == [sc("connected", "reconnecting"), EpisodeEnded(), Emit("reconnected")]
    assert machine.reconnect_attempt == 0


def test_sdk_gives_up_then_rejoins_count_on() -> None:
    policy = FixedPolicy(0.5, 1.0)
    machine = connected(policy)
    drive(machine, SdkReconnecting(10.0))
    assert machine.handle(SdkDisconnected("unknown", True, 40.0)) == [
        Emit("reconnecting", (2,)),
        ScheduleRejoin(2, 0.5),
    ]
    assert machine.handle(RejoinFailed("join_failure", True, 41.0)) == [
        Emit("reconnecting", (3,)),
        ScheduleRejoin(3, 1.0),
    ]
    assert policy.asked == [(1, 30.0, "unknown"), (2, 31.0, "join_failure")]
    assert machine.handle(SdkConnected()) == [sc("connected", "reconnecting"), EpisodeEnded(), Emit("reconnected")]
    assert (machine.state, machine.reconnect_attempt) == ("connected", 0)


def test_transient_end_while_connected_starts_an_episode() -> None:
    policy = FixedPolicy(-1.0)
    machine = connected(policy)
    assert machine.handle(SdkDisconnected("server_shutdown", True, 3.0)) == [
        sc("reconnecting", "connected"),
        EpisodeStarted(),
        Emit("reconnecting", (1,)),
        ScheduleRejoin(1, 0.0),
    ]
    assert policy.asked == [(1, 0.0, "server_shutdown")]


def test_policy_exhausted_ends_with_network_error() -> None:
    machine = connected(FixedPolicy(0.1))
    drive(machine, SdkDisconnected("unknown", True, 0.0))
    assert machine.handle(RejoinFailed("join_failure", True, 1.0)) == [
        sc("disconnected", "reconnecting"),
        CallEnded(),
        Emit("disconnected", ("network_error",)),
    ]
    assert machine.disconnect_reason == "network_error"
    assert machine.reconnect_attempt == 0


@pytest.mark.parametrize("state_inputs", [[], [SdkReconnecting(0.0)]], ids=["connected", "reconnecting"])
def test_terminal_reason_ends_at_once(state_inputs: list[Input]) -> None:
    machine = connected(FixedPolicy(1.0))
    drive(machine, *state_inputs)
    out = machine.handle(SdkDisconnected("room_deleted", False, 1.0))
    assert out[-1] == Emit("disconnected", ("room_deleted",))
    assert machine.state == "disconnected"


def test_terminal_rejoin_failure_ends() -> None:
    machine = connected(FixedPolicy(1.0, 1.0))
    drive(machine, SdkDisconnected("unknown", True, 0.0))
    assert machine.handle(RejoinFailed("auth_rejected", False, 1.0))[-1] == Emit("disconnected", ("auth_rejected",))


def test_disconnect_during_rejoin_is_client_initiated() -> None:
    machine = connected(FixedPolicy(1.0))
    drive(machine, SdkDisconnected("unknown", True, 0.0))
    assert machine.handle(DisconnectRequested()) == [
        sc("disconnected", "reconnecting"),
        CallEnded(),
        Emit("disconnected", ("client_initiated",)),
    ]


def test_ending_for_a_reason_found_outside_the_room() -> None:
    machine = connected()
    assert machine.handle(DisconnectRequested("token_expired"))[-1] == Emit("disconnected", ("token_expired",))


def test_events_after_the_end_are_ignored() -> None:
    machine = connected()
    drive(machine, DisconnectRequested())
    stale = [
        SdkConnected(),
        SdkReconnecting(0.0),
        SdkDisconnected("unknown", True, 0.0),
        DisconnectRequested(),
    ]
    assert drive(machine, *stale) == []
    assert machine.state == "disconnected"


@pytest.mark.parametrize("setup", [[ConnectRequested()], [ConnectRequested(), SdkConnected()]])
def test_connect_while_live_is_an_error(setup: list[Input]) -> None:
    machine = CallMachine(FixedPolicy())
    drive(machine, *setup)
    with pytest.raises(InvalidStateError, match="connect"):
        machine.handle(ConnectRequested())


def test_a_new_session_after_the_end_starts_clean() -> None:
    machine = connected()
    drive(machine, ConnectFailed("unknown"), DisconnectRequested("room_deleted"))
    assert machine.disconnect_reason == "room_deleted"
    assert machine.handle(ConnectRequested()) == [sc("connecting", "disconnected")]
    assert machine.disconnect_reason is None


def test_every_state_change_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="rtcstack")
    connected()
    assert [r.getMessage() for r in caplog.records] == [
        "call state idle -> connecting (connect requested)",
        "call state connecting -> connected (sdk connected)",
    ]
