"""The loopback server's data-plane rules (rtcstack.testing._data) and the registry's data fan-out, without sockets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from livekit.protocol import metrics as pmetrics
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from rtcstack.testing._data import NonceFilter, ReliableSequence, addressed_to, forwarded, stamp
from rtcstack.testing._data_endpoint import DataTrackEndpoint
from rtcstack.testing._data_tracks import DataTrackHub, PublishRefused, check_publish, with_handle
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


def test_check_publish_refuses_as_livekit_does() -> None:
    alice = sender()
    alice.permission.can_publish_data = True
    alice.data_tracks.append(pm.DataTrackInfo(pub_handle=1, sid="DTR_a", name="taken"))
    mute = sender("mute")
    cases = [
        (pr.PublishDataTrackRequest(pub_handle=2, name="x"), mute, pr.RequestResponse.NOT_ALLOWED),
        (pr.PublishDataTrackRequest(pub_handle=0, name="x"), alice, pr.RequestResponse.INVALID_HANDLE),
        (pr.PublishDataTrackRequest(pub_handle=65536, name="x"), alice, pr.RequestResponse.INVALID_HANDLE),
        (pr.PublishDataTrackRequest(pub_handle=2, name=""), alice, pr.RequestResponse.INVALID_NAME),
        (pr.PublishDataTrackRequest(pub_handle=2, name="x" * 257), alice, pr.RequestResponse.INVALID_NAME),
        (pr.PublishDataTrackRequest(pub_handle=1, name="x"), alice, pr.RequestResponse.DUPLICATE_HANDLE),
        (pr.PublishDataTrackRequest(pub_handle=2, name="taken"), alice, pr.RequestResponse.DUPLICATE_NAME),
    ]

    for request, publisher, reason in cases:
        with pytest.raises(PublishRefused) as refused:
            check_publish(request, publisher)
        assert refused.value.reason == reason, request
    check_publish(pr.PublishDataTrackRequest(pub_handle=65535, name="x" * 256), alice)


@dataclass(eq=False)
class FrameSink:
    frames: list[bytes] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)

    def send_data_track_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def data_track_gone(self, track_sid: str) -> None:
        self.gone.append(track_sid)


def test_the_hub_forwards_a_frame_under_each_subscribers_handle() -> None:
    hub = DataTrackHub()
    alice = sender()
    hub.add(alice, pm.DataTrackInfo(pub_handle=7, sid="DTR_a", name="a"))
    bob, carol = FrameSink(), FrameSink()
    hub.subscribe("DTR_a", bob, 1)
    hub.subscribe("DTR_a", carol, 300)
    frame = bytes([0x20, 0]) + (7).to_bytes(2, "big") + bytes(8) + b"payload"

    hub.forward(alice.sid, frame)
    hub.forward(alice.sid, frame[:11])  # shorter than a header
    hub.forward(alice.sid, with_handle(frame, 8))  # no such track
    hub.forward("PA_other", frame)

    assert bob.frames == [with_handle(frame, 1)]
    assert carol.frames == [with_handle(frame, 300)]
    assert with_handle(frame, 300)[2:4] == b"\x01\x2c" and with_handle(frame, 300)[4:] == frame[4:]
    hub.unsubscribe("DTR_a", carol)
    hub.remove("DTR_a")
    hub.forward(alice.sid, frame)
    assert (len(bob.frames), bob.gone, carol.gone) == (1, ["DTR_a"], [])
    assert hub.published("DTR_a") is None


def test_an_endpoint_publishes_subscribes_forwards_and_cleans_up() -> None:
    registry = RoomRegistry()
    join(registry, "alice")
    join(registry, "bob")
    alice, bob = registry.find("alice"), registry.find("bob")
    alice.info.permission.can_publish_data = True
    signals: dict[str, list[pr.SignalResponse]] = {"alice": [], "bob": []}
    frames: list[bytes] = []
    endpoints = {
        "alice": DataTrackEndpoint(alice, registry, signals["alice"].append, frames.append),
        "bob": DataTrackEndpoint(bob, registry, signals["bob"].append, frames.append),
    }

    def request(identity: str, **message: Any) -> pr.SignalResponse:
        endpoints[identity].handle(pr.SignalRequest(**message))
        return signals[identity][-1]

    def subscribe(track_sid: str, on: bool) -> dict[int, str]:
        update = pr.UpdateDataSubscription.Update(track_sid=track_sid, subscribe=on)
        handles = request("bob", update_data_subscription=pr.UpdateDataSubscription(updates=[update]))
        return {h: p.track_sid for h, p in handles.data_track_subscriber_handles.sub_handles.items()}

    published = request("alice", publish_data_track_request=pr.PublishDataTrackRequest(pub_handle=9, name="t"))
    sid = published.publish_data_track_response.info.sid
    refused = request("alice", publish_data_track_request=pr.PublishDataTrackRequest(pub_handle=9, name="u"))
    missing = request("alice", unpublish_data_track_request=pr.UnpublishDataTrackRequest(pub_handle=5))

    assert [t.sid for t in alice.info.data_tracks] == [sid]
    assert refused.request_response.reason == pr.RequestResponse.DUPLICATE_HANDLE
    assert missing.request_response.reason == pr.RequestResponse.NOT_FOUND
    assert subscribe("DTR_nothing", True) == {}
    assert subscribe(sid, True) == {1: sid}
    endpoints["alice"].received(bytes([0x20, 0, 0, 9]) + bytes(8) + b"x")
    assert frames == [bytes([0x20, 0, 0, 1]) + bytes(8) + b"x"]
    assert subscribe(sid, False) == {}
    assert subscribe(sid, True) == {2: sid}
    endpoints["alice"].close()
    assert signals["bob"][-1].data_track_subscriber_handles.sub_handles == {}
    assert registry.data_tracks.published(sid) is None
