"""The loopback server session's units, each through its own methods: uplink (media in), downlink (media out),
negotiation and the one ServerInfo (no sockets)."""

from __future__ import annotations

import asyncio

from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from rtcstack.testing._downlink import Downlink, quality_for_width
from rtcstack.testing._forward import Outlet, Source
from rtcstack.testing._media import OfferedSection
from rtcstack.testing._negotiation import Negotiation, PeerEvents
from rtcstack.testing._rooms import Participant, RoomRegistry
from rtcstack.testing._router import MediaRouter
from rtcstack.testing._signal import server_info
from rtcstack.testing._uplink import Uplink, announced_track


def _events(refused: list[Outlet] | None = None) -> PeerEvents:
    return PeerEvents(
        connected=lambda: None,
        data=lambda label, raw: None,
        inbound=lambda section, mime: None,
        inbound_ended=lambda mid: None,
        refused=(refused if refused is not None else []).append,
        failed=lambda: None,
    )


def _room() -> tuple[RoomRegistry, Participant, Participant]:
    registry = RoomRegistry(0)
    alice = Participant(room="demo", info=pm.ParticipantInfo(identity="alice", sid="PA_alice"))
    bob = Participant(room="demo", info=pm.ParticipantInfo(identity="bob", sid="PA_bob"))
    registry.join(alice)
    registry.join(bob)
    return registry, alice, bob


class _Sink:
    """A session as the router sees it: a sink with a downlink."""

    def __init__(self, downlink: Downlink) -> None:
        self.downlink = downlink

    def send(self, message: pr.SignalResponse) -> None:
        pass

    def close(self, leave: pr.LeaveRequest | None) -> None:
        pass

    def send_data(self, packet: pm.DataPacket) -> None:
        pass


def _section(mid: str, kind: str, track_id: str) -> OfferedSection:
    return OfferedSection(mid=mid, kind=kind, direction="sendonly", track_id=track_id, codecs=())


# -- uplink ---------------------------------------------------------------------------------------------------


def test_an_announced_track_echoes_the_request_and_adds_no_dtx() -> None:
    add = pr.AddTrackRequest(cid="mic", type=pm.AUDIO, name="mic", disable_dtx=True, source=pm.TrackSource.MICROPHONE)
    track = announced_track(add)
    assert track.sid.startswith("TR_") and track.name == "mic" and track.mime_type == "audio/opus"
    assert list(track.audio_features) == [pm.TF_NO_DTX]
    video = pr.AddTrackRequest(cid="cam", type=pm.VIDEO, simulcast_codecs=[pr.SimulcastCodec(codec="h264", cid="c")])
    assert announced_track(video).mime_type == "video/H264"


async def test_uplink_refuses_a_video_codec_it_cannot_forward() -> None:
    registry, alice, _ = _room()
    sent: list[pr.SignalResponse] = []
    uplink = Uplink(alice, registry, MediaRouter(registry), sent.append)
    add = pr.AddTrackRequest(cid="cam", type=pm.VIDEO, simulcast_codecs=[pr.SimulcastCodec(codec="vp9", cid="cam")])
    uplink.add_track(add)
    (refusal,) = sent
    assert refusal.request_response.reason == pr.RequestResponse.UNSUPPORTED_TYPE
    assert "vp9" in refusal.request_response.message and list(alice.info.tracks) == []


async def test_uplink_matches_media_to_its_announced_track_by_cid_else_the_oldest_of_its_kind() -> None:
    registry, alice, bob = _room()
    router = MediaRouter(registry)
    sent: list[pr.SignalResponse] = []
    uplink = Uplink(alice, registry, router, sent.append)
    uplink.add_track(pr.AddTrackRequest(cid="mic", type=pm.AUDIO, source=pm.TrackSource.MICROPHONE))
    uplink.add_track(pr.AddTrackRequest(cid="cam", type=pm.VIDEO, source=pm.TrackSource.CAMERA))
    mic, cam = (response.track_published.track for response in sent)
    assert uplink.inbound(_section("0", "video", "unknown-name"), "video/VP8") is not None  # the oldest video
    source = uplink.inbound(_section("1", "audio", "mic"), "audio/opus")
    assert source is not None and (source.track_sid, source.source) == (mic.sid, "microphone")
    assert uplink.inbound(_section("2", "audio", "mic"), "audio/opus") is None  # nothing left announced
    await asyncio.sleep(0)  # published on the next turn of the loop
    assert router.source(cam.sid) is not None and router.source(mic.sid) is source
    sent.clear()
    uplink.inbound_ended("1")
    assert sent == [pr.SignalResponse(track_unpublished=pr.TrackUnpublishedResponse(track_sid=mic.sid))]
    assert router.source(mic.sid) is None and [t.sid for t in alice.info.tracks] == [cam.sid]
    uplink.close()
    assert router.source(cam.sid) is None and bob.info.tracks == []


# -- downlink -------------------------------------------------------------------------------------------------


def _video_source(sid: str, mime: str) -> Source:
    source = Source(sid, "PA_alice", "video", "camera")
    source.mime_type = mime
    return source


async def test_a_track_in_a_codec_aiortc_lacks_is_answered_codec_unsupported() -> None:
    """Legacy subscriber connection: the subscription ends as LiveKit ends it, with a SubscriptionResponse."""
    registry, _, bob = _room()
    sent: list[pr.SignalResponse] = []
    refused: list[Outlet] = []
    negotiation = Negotiation("bob", single_pc=False, send=sent.append, events=_events(refused))
    downlink = Downlink(bob, registry, MediaRouter(registry), negotiation, sent.append, auto_subscribe=True)
    vp9 = _video_source("TR_v", "video/VP9")
    downlink.attach(vp9)
    (outlet,) = refused
    downlink.refused(outlet)
    refusal = pr.SubscriptionResponse(track_sid="TR_v", err=pm.SE_CODEC_UNSUPPORTED)
    assert sent == [pr.SignalResponse(subscription_response=refusal)] and vp9.outlets == []
    assert not downlink.receives({"TR_v"})
    await negotiation.close()


async def test_downlink_subscriptions_as_livekit_answers_them() -> None:
    registry, alice, bob = _room()
    router = MediaRouter(registry)
    sent: list[pr.SignalResponse] = []
    negotiation = Negotiation("bob", single_pc=True, send=sent.append, events=_events())
    downlink = Downlink(bob, registry, router, negotiation, sent.append, auto_subscribe=False)
    bob.sink = _Sink(downlink)
    registry.publish_track(alice, pm.TrackInfo(sid="TR_a", type=pm.AUDIO))
    downlink.update_subscription(pr.UpdateSubscription(track_sids=["TR_a", "TR_nope"], subscribe=True))
    assert downlink.wants("TR_a") and not downlink.wants("TR_nope")
    assert sent == [
        pr.SignalResponse(subscription_response=pr.SubscriptionResponse(track_sid="TR_nope", err=pm.SE_TRACK_NOTFOUND))
    ]
    source = Source("TR_a", "PA_alice", "audio", "microphone")
    router.publish(alice, source)  # its media arrives: bob asked for it, so he is sent it
    assert downlink.receives({"TR_a"}) and len(source.outlets) == 1
    downlink.update_subscription(pr.UpdateSubscription(track_sids=["TR_a"], subscribe=False))
    assert not downlink.receives({"TR_a"}) and not downlink.wants("TR_a") and source.outlets == []
    await negotiation.close()


def test_a_subscriber_showing_a_track_small_gets_the_smallest_layer_wide_enough() -> None:
    layers = [
        pm.VideoLayer(quality=pm.HIGH, width=1280),
        pm.VideoLayer(quality=pm.LOW, width=320),
        pm.VideoLayer(quality=pm.MEDIUM, width=640),
    ]
    assert quality_for_width(layers, 200) == pm.LOW
    assert quality_for_width(layers, 321) == pm.MEDIUM
    assert quality_for_width(layers, 1280) == pm.HIGH
    assert quality_for_width(layers, 4000) == pm.HIGH  # none wide enough: the largest
    assert quality_for_width([], 100) == pm.HIGH


# -- negotiation ----------------------------------------------------------------------------------------------


async def test_a_burst_of_changes_is_one_negotiation_and_a_closing_session_makes_none() -> None:
    sent: list[pr.SignalResponse] = []
    negotiation = Negotiation("bob", single_pc=True, send=sent.append, events=_events())
    for _ in range(3):
        negotiation.negotiate()
    await asyncio.sleep(0)
    assert [m.WhichOneof("message") for m in sent] == ["media_sections_requirement"]
    negotiation.stop()
    negotiation.negotiate()
    await asyncio.sleep(0)
    assert len(sent) == 1  # a closing session negotiates no more
    await negotiation.close()


def test_one_server_info() -> None:
    info = server_info()
    assert info.node_id == "loopback" and info.protocol == 16 and info.edition == pm.ServerInfo.Standard
