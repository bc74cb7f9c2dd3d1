"""The roster: join order, snapshots, and reconciliation across a reconnect."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from rtcstack._machine import Emit, Left
from rtcstack._models import Participant
from rtcstack._roster import Roster


def person(
    identity: str, *, sid: str | None = None, metadata: str = "", state: str = "active", joined: float | None = None
) -> Participant:
    return Participant.model_validate(
        {
            "identity": identity,
            "sid": sid or f"PA_{identity}",
            "name": identity.title(),
            "kind": "standard",
            "state": state,
            "connection_quality": "unknown",
            "metadata": metadata,
            "attributes": {},
            "is_local": False,
            "is_speaking": False,
            "tracks": [],
            "joined_at": None if joined is None else datetime.fromtimestamp(joined, timezone.utc),
        }
    )


def names(events: Sequence[Emit | Left]) -> list[tuple[str, str]]:
    out = []
    for event in events:
        if isinstance(event, Left):
            out.append(("participant_left", event.participant.identity))
            continue
        (participant,) = event.args
        assert isinstance(participant, Participant)
        out.append((event.name, participant.identity))
    return out


def test_join_leave_in_join_order() -> None:
    roster = Roster()
    assert names(roster.join(person("bob"))) == [("participant_joined", "bob")]
    assert names(roster.join(person("ann"))) == [("participant_joined", "ann")]
    assert [p.identity for p in roster.snapshot()] == ["bob", "ann"]
    assert names(roster.leave("bob")) == [("participant_left", "bob")]
    assert roster.leave("bob") == []
    assert [p.identity for p in roster.snapshot()] == ["ann"]


def test_a_second_announcement_is_an_update_not_a_join() -> None:
    roster = Roster()
    roster.join(person("bob"))
    assert names(roster.join(person("bob", metadata="x"))) == [("participant_updated", "bob")]
    assert len(roster.snapshot()) == 1


def test_update_and_replace_only_touch_known_participants() -> None:
    roster = Roster()
    assert roster.update(person("ghost")) == []
    assert roster.replace(person("ghost")) is False
    roster.join(person("bob"))
    assert names(roster.update(person("bob", metadata="m"))) == [("participant_updated", "bob")]
    assert roster.replace(person("bob", metadata="n")) is True
    found = roster.get("bob")
    assert found is not None and found.metadata == "n"


def test_snapshot_is_a_copy() -> None:
    roster = Roster()
    roster.join(person("bob"))
    roster.snapshot().clear()
    assert len(roster.snapshot()) == 1


def test_churn_while_held_is_reconciled_to_real_changes_only() -> None:
    roster = Roster()
    for who in ("ann", "bob", "cid"):
        roster.join(person(who))
    roster.hold()
    assert roster.held
    # a full restart: everyone leaves and comes back; meanwhile cid really left and dan really joined
    assert roster.leave("ann") == [] and roster.leave("bob") == []
    assert roster.join(person("ann")) == [] and roster.update(person("bob", metadata="z")) == []
    assert [p.identity for p in roster.snapshot()] == ["ann", "bob", "cid"]
    events = roster.release([person("dan"), person("bob", metadata="new"), person("ann")])
    assert names(events) == [
        ("participant_left", "cid"),
        ("participant_updated", "bob"),
        ("participant_joined", "dan"),
    ]
    assert not roster.held
    assert [p.identity for p in roster.snapshot()] == ["ann", "bob", "dan"]


def test_release_with_nobody_changed_emits_nothing() -> None:
    roster = Roster()
    roster.join(person("ann"))
    roster.hold()
    assert roster.release([person("ann")]) == []


def test_a_new_sid_or_state_counts_as_an_update() -> None:
    roster = Roster()
    roster.join(person("ann"))
    roster.join(person("bob"))
    roster.hold()
    events = roster.release([person("ann", sid="PA_new"), person("bob", state="joined")])
    assert names(events) == [("participant_updated", "ann"), ("participant_updated", "bob")]


def test_clear_forgets_everyone_and_unholds() -> None:
    roster = Roster()
    roster.join(person("ann"))
    roster.hold()
    roster.clear()
    assert roster.snapshot() == [] and not roster.held


def test_seed_takes_the_room_as_it_is_without_events() -> None:
    roster = Roster()
    roster.hold()
    roster.seed([person("ann"), person("bob")])
    assert [p.identity for p in roster.snapshot()] == ["ann", "bob"] and not roster.held


def test_seed_and_release_follow_join_times_not_the_sdk_order() -> None:
    """The SDK lists a Room's participants in no particular order: the roster orders them by when they joined."""
    roster = Roster()
    roster.seed([person("cat", joined=30.0), person("ann", joined=10.0), person("who"), person("bob", joined=20.0)])
    assert [p.identity for p in roster.snapshot()] == ["ann", "bob", "cat", "who"]
    roster.hold()
    events = roster.release([person("eve", joined=50.0), person("ann", joined=10.0), person("dan", joined=40.0)])
    assert names(events) == [
        ("participant_left", "bob"),
        ("participant_left", "cat"),
        ("participant_left", "who"),
        ("participant_joined", "dan"),
        ("participant_joined", "eve"),
    ]
    assert [p.identity for p in roster.snapshot()] == ["ann", "dan", "eve"]


def test_release_keeps_the_absent_it_is_told_to_keep_in_their_place_and_silently() -> None:
    roster = Roster()
    roster.seed([person("ann", joined=10.0), person("bob", joined=20.0), person("cat", joined=30.0)])
    roster.hold()
    events = roster.release([person("cat", joined=30.0), person("dan", joined=40.0)], keep=["ann"])
    assert names(events) == [("participant_left", "bob"), ("participant_joined", "dan")]
    assert [p.identity for p in roster.snapshot()] == ["ann", "cat", "dan"]
    assert names(roster.join(person("ann", sid="PA_ann2", joined=50.0))) == [("participant_updated", "ann")]
