"""The loopback server's data-plane rules (rtcstack.testing._data) and the registry's data fan-out, without sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

from livekit.protocol import metrics as pmetrics
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from rtcstack.testing._data import NonceFilter, ReliableSequence, addressed_to, forwarded, stamp
from rtcstack.testing._rooms import Participant, RoomRegistry, new_sid

RELIABLE, LOSSY = pm.DataPacket.RELIABLE, pm.DataPacket.LOSSY


def sender(
    identity: str = "alice", kind: pm.ParticipantInfo.Kind = pm.ParticipantInfo.STANDARD, hidden: bool = False
) -> pm.ParticipantInfo:
    return pm.ParticipantInfo(
        identity=identity, sid=new_sid("PA"), kind=kind, permission=pm.ParticipantPermission(hidden=hidden)
    )


def test_stamp_takes_the_kind_from_the_channel_and_names_the_sender() -> None:
    alice = sender()
    packet = pm.DataPacket(kind=LOSSY, participant_identity="mallory", rpc_request=pm.RpcRequest(method="m"))

    stamp(packet, RELIABLE, alice)

    assert (packet.kind, packet.participant_identity, packet.participant_sid) == (RELIABLE, "alice", alice.sid)


def test_stamp_fills_the_user_packet_and_shares_its_destinations() -> None:
    alice = sender()
    deprecated = pm.DataPacket(user=pm.UserPacket(payload=b"x", destination_identities=["bob"]))
    current = pm.DataPacket(destination_identities=["carol"], user=pm.UserPacket(destination_identities=["bob"]))

    stamp(deprecated, LOSSY, alice)
    stamp(current, LOSSY, alice)

    assert (deprecated.user.participant_identity, deprecated.user.participant_sid) == ("alice", alice.sid)
    assert list(deprecated.destination_identities) == ["bob"]
    assert list(current.destination_identities) == list(current.user.destination_identities) == ["carol"]


def test_stamp_hides_a_hidden_sender_but_keeps_its_sid_on_the_packet() -> None:
    ghost = sender("ghost", hidden=True)
    packet = pm.DataPacket(user=pm.UserPacket(payload=b"x"))

    stamp(packet, RELIABLE, ghost)

    assert (packet.participant_identity, packet.user.participant_identity, packet.user.participant_sid) == ("", "", "")
    assert packet.participant_sid == ghost.sid


def test_an_agent_may_chat_and_stream_text_on_behalf_of_someone_else() -> None:
    agent = sender("agent", kind=pm.ParticipantInfo.AGENT)
    chat = pm.DataPacket(participant_identity="alice", chat_message=pm.ChatMessage(message="hi"))
    text = pm.DataPacket(
        participant_identity="alice", stream_header=pm.DataStream.Header(text_header=pm.DataStream.TextHeader())
    )
    own = pm.DataPacket(participant_identity="agent", chat_message=pm.ChatMessage(message="mine"))
    forged = pm.DataPacket(participant_identity="alice", chat_message=pm.ChatMessage(message="hi"))

    for packet in (chat, text, own):
        stamp(packet, RELIABLE, agent)
    stamp(forged, RELIABLE, sender("bob"))

    assert (chat.participant_identity, chat.chat_message.generated) == ("alice", True)
    assert (text.participant_identity, text.stream_header.text_header.generated) == ("alice", True)
    assert (own.participant_identity, own.chat_message.generated) == ("agent", False)
    assert (forged.participant_identity, forged.chat_message.generated) == ("bob", False)


def test_transcriptions_pass_from_agents_only_and_metrics_never_as_such() -> None:
    transcription = pm.DataPacket(transcription=pm.Transcription(transcribed_participant_identity="alice"))
    metrics = pm.DataPacket(metrics=pmetrics.MetricsBatch())

    assert forwarded(transcription, sender("agent", kind=pm.ParticipantInfo.AGENT))
    assert not forwarded(transcription, sender())
    assert not forwarded(metrics, sender())
    for kind in ("user", "sip_dtmf", "chat_message", "rpc_ack", "stream_chunk", "encrypted_packet"):
        packet = pm.DataPacket()
        getattr(packet, kind).SetInParent()
        assert forwarded(packet, sender()), kind
    assert forwarded(pm.DataPacket(), sender())


def test_addressed_to_destination_identities_or_deprecated_sids() -> None:
    everyone = pm.DataPacket(rpc_request=pm.RpcRequest())
    by_identity = pm.DataPacket(destination_identities=["bob"], rpc_request=pm.RpcRequest())
    by_sid = pm.DataPacket(user=pm.UserPacket(destination_sids=["PA_bob"]))

    assert addressed_to(everyone, "PA_carol", "carol")
    assert addressed_to(by_identity, "PA_bob", "bob")
    assert not addressed_to(by_identity, "PA_carol", "carol")
    assert addressed_to(by_sid, "PA_bob", "bob")
    assert not addressed_to(by_sid, "PA_carol", "carol")


def test_a_reliable_resend_is_dropped() -> None:
    sequence = ReliableSequence()

    fresh = [sequence.fresh(pm.DataPacket(sequence=n), RELIABLE) for n in (1, 2, 2, 1, 3)]

    assert fresh == [True, True, False, False, True]
    assert sequence.fresh(pm.DataPacket(sequence=1), LOSSY)
    assert sequence.fresh(pm.DataPacket(), RELIABLE)


def test_a_user_packet_with_a_recent_nonce_is_a_duplicate() -> None:
    nonces = NonceFilter()
    packet = pm.DataPacket(user=pm.UserPacket(nonce=bytes(16)))

    assert not nonces.duplicate(packet)
    assert nonces.duplicate(packet)
    assert not nonces.duplicate(pm.DataPacket(user=pm.UserPacket(nonce=b"short")))
    assert not nonces.duplicate(pm.DataPacket(user=pm.UserPacket(nonce=b"short")))
    for n in range(1, 101):
        assert not nonces.duplicate(pm.DataPacket(user=pm.UserPacket(nonce=n.to_bytes(16, "big"))))
    assert not nonces.duplicate(packet), "the oldest nonce is forgotten after 100 newer ones"


@dataclass
class Sink:
    data: list[pm.DataPacket] = field(default_factory=list)

    def send(self, message: pr.SignalResponse) -> None:
        del message

    def close(self, leave: pr.LeaveRequest | None) -> None:
        del leave

    def send_data(self, packet: pm.DataPacket) -> None:
        self.data.append(packet)


def join(registry: RoomRegistry, identity: str, metrics: bool = False) -> Sink:
    sink = Sink()
    permission = pm.ParticipantPermission(can_subscribe_metrics=metrics)
    info = pm.ParticipantInfo(identity=identity, sid=new_sid("PA"), permission=permission)
    registry.join(Participant(room="r", info=info, sink=sink))
    return sink


def test_the_room_drops_a_user_packet_sent_twice_with_one_nonce() -> None:
    registry = RoomRegistry()
    bob = join(registry, "bob")
    packet = pm.DataPacket(user=pm.UserPacket(payload=b"once", nonce=bytes(range(16))))

    registry.send_data("r", packet)
    registry.send_data("r", packet)

    assert [p.user.payload for p in bob.data] == [b"once"]


def test_metrics_go_to_those_allowed_to_subscribe_to_them() -> None:
    registry = RoomRegistry()
    watcher, other = join(registry, "watcher", metrics=True), join(registry, "other")

    registry.send_metrics("r", pm.DataPacket(metrics=pmetrics.MetricsBatch()))
    registry.send_metrics("nowhere", pm.DataPacket(metrics=pmetrics.MetricsBatch()))

    assert (len(watcher.data), len(other.data)) == (1, 0)
