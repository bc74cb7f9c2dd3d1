"""RoomRegistry: membership, fan-out and room lifetime, driven with recording sinks (no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from rtcstack.testing._rooms import Participant, RoomRegistry, new_sid


@dataclass
class Recorder:
    """A Sink that keeps what it was sent (encoded at send time, as sessions do)."""

    sent: list[pr.SignalResponse] = field(default_factory=list)
    closed_with: list[pr.LeaveRequest | None] = field(default_factory=list)
    data: list[pm.DataPacket] = field(default_factory=list)

    def send(self, message: pr.SignalResponse) -> None:
        self.sent.append(pr.SignalResponse.FromString(message.SerializeToString()))

    def close(self, leave: pr.LeaveRequest | None) -> None:
        self.closed_with.append(leave)

    def send_data(self, packet: pm.DataPacket) -> None:
        self.data.append(packet)

    def updates(self, about: str | None = None) -> list[tuple[str, int]]:
        return [
            (p.identity, p.state)
            for m in self.sent
            if m.WhichOneof("message") == "update"
            for p in m.update.participants
            if about is None or p.identity == about
        ]


def _join(registry: RoomRegistry, identity: str, room: str = "r") -> tuple[Participant, Recorder]:
    sink = Recorder()
    info = pm.ParticipantInfo(sid=new_sid("PA"), identity=identity, state=pm.ParticipantInfo.JOINED)
    participant = Participant(room=room, info=info, sink=sink)
    registry.join(participant)
    return participant, sink


def test_rooms_open_on_first_join_and_close_after_the_last_leave() -> None:
    registry = RoomRegistry()
    alice, _ = _join(registry, "alice")
    bob, _ = _join(registry, "bob")
    assert [r.name for r in registry.rooms()] == ["r"]
    assert registry.others(alice) == [bob.info]

    assert registry.remove(alice)
    assert registry.room("r") is not None
    assert registry.remove(bob)
    assert registry.rooms() == []
    assert not registry.remove(bob)


def test_join_and_leave_are_announced_to_the_others_only() -> None:
    registry = RoomRegistry()
    alice, alice_sink = _join(registry, "alice")
    bob, bob_sink = _join(registry, "bob")

    registry.remove(bob, pm.CLIENT_INITIATED)

    assert alice_sink.updates() == [("bob", pm.ParticipantInfo.JOINED), ("bob", pm.ParticipantInfo.DISCONNECTED)]
    assert bob_sink.updates() == []
    assert bob.info.disconnect_reason == pm.CLIENT_INITIATED
    assert registry.participant("r", "alice") is alice


def test_updates_reach_everyone_with_rising_versions() -> None:
    registry = RoomRegistry()
    alice, alice_sink = _join(registry, "alice")
    _, bob_sink = _join(registry, "bob")
    version = alice.info.version

    registry.set_state(alice, pm.ParticipantInfo.ACTIVE)
    registry.update(alice, name="Alice", metadata="m", attributes={"a": "1", "b": "2"})
    registry.update(alice, attributes={"a": ""})

    assert alice.info.version > version
    assert dict(alice.info.attributes) == {"b": "2"}
    assert alice_sink.updates("alice") == bob_sink.updates() == [("alice", pm.ParticipantInfo.ACTIVE)] * 3
    assert bob_sink.sent[-1].update.participants[0].name == "Alice"


def test_tracks_publish_mute_and_unpublish() -> None:
    registry = RoomRegistry()
    alice, alice_sink = _join(registry, "alice")
    _, bob_sink = _join(registry, "bob")
    track = pm.TrackInfo(sid="TR_1", name="mic", type=pm.AUDIO)

    registry.publish_track(alice, track)
    assert registry.set_track_muted(alice, "TR_1", True)
    assert not registry.set_track_muted(alice, "TR_x", True)
    assert registry.unpublish_track(alice, "TR_1")
    assert not registry.unpublish_track(alice, "TR_1")

    tracks = [list(m.update.participants[0].tracks) for m in bob_sink.sent]
    assert [[(t.sid, t.muted) for t in ts] for ts in tracks] == [[("TR_1", False)], [("TR_1", True)], []]
    assert alice_sink.updates("alice") == []


def test_duplicate_identity_closes_the_old_session_and_reannounces() -> None:
    registry = RoomRegistry()
    old, old_sink = _join(registry, "alice")
    _, bob_sink = _join(registry, "bob")

    new, _ = _join(registry, "alice")

    assert [leave.reason for leave in old_sink.closed_with if leave] == [pm.DUPLICATE_IDENTITY]
    assert old.sink is None
    assert registry.participant("r", "alice") is new
    assert bob_sink.updates()[-2:] == [("alice", pm.ParticipantInfo.DISCONNECTED), ("alice", pm.ParticipantInfo.JOINED)]


def test_kick_and_delete_room_send_the_leave() -> None:
    registry = RoomRegistry()
    alice, alice_sink = _join(registry, "alice")
    _, bob_sink = _join(registry, "bob")

    registry.kick(alice, pr.LeaveRequest(reason=pm.PARTICIPANT_REMOVED))
    assert [leave.reason for leave in alice_sink.closed_with if leave] == [pm.PARTICIPANT_REMOVED]
    assert registry.delete_room("r")
    assert [leave.reason for leave in bob_sink.closed_with if leave] == [pm.ROOM_DELETED]
    assert registry.rooms() == []
    assert not registry.delete_room("r")


def test_quality_goes_to_everyone_and_synthetic_participants_get_nothing() -> None:
    registry = RoomRegistry()
    alice, alice_sink = _join(registry, "alice")
    bot = Participant(room="r", info=pm.ParticipantInfo(sid="PA_bot", identity="bot"))
    registry.join(bot)

    registry.set_quality(alice, pm.POOR, 2.5)

    (update,) = [m for m in alice_sink.sent if m.WhichOneof("message") == "connection_quality"]
    assert update.connection_quality.updates[0].participant_sid == alice.sid
    assert registry.find("bot") is bot


def test_find_raises_for_unknown_identities() -> None:
    registry = RoomRegistry()
    _join(registry, "alice", room="a")
    assert registry.find("alice", room="a").identity == "alice"
    with pytest.raises(LookupError, match="bob"):
        registry.find("bob")
    with pytest.raises(LookupError, match="room 'b'"):
        registry.find("alice", room="b")
    assert registry.participant("b", "alice") is None


def test_room_snapshot_counts_participants_and_publishers() -> None:
    registry = RoomRegistry()
    alice, _ = _join(registry, "alice")
    _join(registry, "bob")
    registry.publish_track(alice, pm.TrackInfo(sid="TR_1"))

    room = registry.room("r")
    assert room is not None
    snapshot = room.snapshot()
    assert (snapshot.name, snapshot.num_participants, snapshot.num_publishers) == ("r", 2, 1)
    assert snapshot.sid.startswith("RM_")


def test_data_goes_to_everyone_but_the_sender_or_only_to_its_destinations() -> None:
    registry = RoomRegistry()
    alice, alice_sink = _join(registry, "alice")
    bob, bob_sink = _join(registry, "bob")
    _, carol_sink = _join(registry, "carol")
    _join(registry, "dave", room="elsewhere")
    registry.send_data("r", pm.DataPacket(user=pm.UserPacket(payload=b"all")), sender=alice)
    assert [len(s.data) for s in (alice_sink, bob_sink, carol_sink)] == [0, 1, 1]
    registry.send_data("r", pm.DataPacket(user=pm.UserPacket(payload=b"dm", destination_identities=["carol"])))
    registry.send_data("r", pm.DataPacket(user=pm.UserPacket(payload=b"sid", destination_sids=[bob.sid])))
    assert [p.user.payload for p in bob_sink.data] == [b"all", b"sid"]
    assert [p.user.payload for p in carol_sink.data] == [b"all", b"dm"]
    registry.send_data("nowhere", pm.DataPacket(user=pm.UserPacket(payload=b"x")))
