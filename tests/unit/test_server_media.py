"""The loopback SFU's pure parts: SDP reading and answering, outlets, keyframes, tables (no sockets)."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError
from livekit.protocol import models as pm

import rtcstack.testing
from rtcstack import _vocab
from rtcstack.testing._forward import Outlet, ReceiverTap, Source, keyframe_of, undecodable
from rtcstack.testing._media import MediaPeer, accept_layers, description_problem, offered_sections, unsupported
from rtcstack.testing._rooms import Participant, RoomRegistry
from rtcstack.testing._router import MediaRouter
from rtcstack.testing._synthetic import pattern
from rtcstack.testing._tables import TRACK_SOURCE_NAMES
from tests.offers import MALFORMED_OFFERS

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1 2",
        "m=audio 9 UDP/TLS/RTP/SAVPF 63 111",
        "a=mid:0",
        "a=sendonly",
        "a=msid:stream-a track-a",
        "a=rtpmap:63 red/48000/2",
        "a=rtpmap:111 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=mid:1",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=sendonly",
        "a=msid:stream-v track-v",
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:97 rtx/90000",
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
        "a=simulcast:send q;h;f",
        "m=video 9 UDP/TLS/RTP/SAVPF 98 99",
        "a=mid:2",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=recvonly",
        "a=rtpmap:98 VP9/90000",
        "a=rtpmap:99 rtx/90000",
        "",
    ]
)

ANSWER = "\r\n".join(
    [
        "v=0",
        "o=- 3 4 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:0",
        "a=recvonly",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "a=mid:1",
        "a=recvonly",
        "m=video 9 UDP/TLS/RTP/SAVPF 98",
        "a=mid:2",
        "a=inactive",
        "",
    ]
)


async def _aiortc_description() -> tuple[str, str]:
    """A real offer (audio, video, data) and the answer to it, from two aiortc peers."""
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    offerer.addTransceiver("audio", direction="sendonly")
    offerer.addTransceiver("video", direction="recvonly")
    offerer.createDataChannel("_reliable")
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    descriptions = (offerer.localDescription.sdp, answerer.localDescription.sdp)
    await offerer.close()
    await answerer.close()
    return descriptions


async def test_a_real_offer_and_answer_have_no_problem() -> None:
    offer, answer = await _aiortc_description()
    assert description_problem(offer, "offer") is None
    assert description_problem(answer, "answer") is None
    assert description_problem(offer, "answer") == "m-line 0 (audio) has no DTLS setup and fingerprint"  # actpass


@pytest.mark.parametrize("sdp", list(MALFORMED_OFFERS.values()), ids=list(MALFORMED_OFFERS))
def test_what_made_aiortc_raise_is_a_problem(sdp: str) -> None:
    assert description_problem(sdp, "offer") is not None


async def test_each_missing_part_is_named() -> None:
    offer, _ = await _aiortc_description()
    without = {
        "a=mid:": "has no mid",
        "a=ice-ufrag:": "has no ICE username fragment and password",
        "a=fingerprint:": "has no DTLS setup and fingerprint",
    }
    for prefix, problem in without.items():
        lines = [line for line in offer.split("\r\n") if not line.startswith(prefix)]
        assert problem in str(description_problem("\r\n".join(lines), "offer")), prefix
    unknown = re.sub(r"(a=rtpmap:\d+ )[^/]+", r"\1X-UNKNOWN", offer)
    # the sendonly audio is left to the codec refusal (CodecRefused); the recvonly video can receive nothing
    assert description_problem(unknown, "offer") == "m-line 1 (video) offers no codec the server knows"
    text = offer.replace("m=audio", "m=text")
    assert description_problem(text, "offer") == "m-line 0 (text) is of no kind WebRTC carries"


def _video_source(sid: str, mime: str) -> Source:
    source = Source(sid, "PA_alice", "video", "camera")
    source.mime_type = mime
    return source


async def test_an_outlet_in_a_codec_the_client_offers_no_m_line_for_is_refused() -> None:
    """Single peer connection: the client's recvonly m-line takes VP8 only; an H.264 track cannot go on it."""
    refused: list[Outlet] = []
    peer = MediaPeer("bob/publisher", on_refused=refused.append)
    client = RTCPeerConnection()
    transceiver = client.addTransceiver("video", direction="recvonly")
    capabilities = RTCRtpReceiver.getCapabilities("video")
    assert capabilities is not None
    transceiver.setCodecPreferences([c for c in capabilities.codecs if c.mimeType in ("video/VP8", "video/rtx")])
    await client.setLocalDescription(await client.createOffer())
    h264, vp8 = _video_source("TR_h", "video/H264").outlet("bob"), _video_source("TR_v", "video/VP8").outlet("bob")
    peer.queue_outlet(h264, "PA_alice|TR_h")
    peer.queue_outlet(vp8, "PA_alice|TR_v")
    _, sent = await peer.answer(client.localDescription.sdp)
    assert refused == [h264] and list(sent.values()) == ["TR_v"] and not peer.unsent()
    await peer.close()
    await client.close()


def test_offered_sections_read_mid_direction_track_codecs_and_layers() -> None:
    audio, video, idle = offered_sections(OFFER)
    assert (audio.mid, audio.kind, audio.direction, audio.track_id) == ("0", "audio", "sendonly", "track-a")
    assert audio.codecs == ("audio/red", "audio/opus") and audio.sends and audio.rids == ()
    assert (video.rids, video.rid_extension, video.track_id) == (("q", "h", "f"), 10, "track-v")
    assert (idle.direction, idle.sends, idle.track_id) == ("recvonly", False, "")


def test_unsupported_means_no_forwardable_codec_besides_helpers() -> None:
    audio, video, idle = offered_sections(OFFER)
    assert not unsupported(audio) and not unsupported(video)
    assert unsupported(idle)  # VP9 and its RTX only


def test_answer_accepts_the_rid_extension_everywhere_and_every_layer() -> None:
    answer = accept_layers(OFFER, ANSWER)
    sections = answer.split("m=")
    assert "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in sections[2]
    assert "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f" in sections[2]
    assert "a=extmap:10" in sections[3] and "a=simulcast" not in sections[3]  # recvonly: the extension only
    assert "extmap" not in sections[1]  # audio
    assert answer.endswith("\r\n") and "\n\n" not in answer


def test_an_extension_aiortc_already_answered_is_not_repeated() -> None:
    answer = ANSWER.replace("a=mid:1\r\n", "a=mid:1\r\na=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n")
    assert accept_layers(OFFER, answer).count("a=extmap:10") == 2  # sections 1 and 2, once each


def test_an_offer_without_rid_leaves_the_answer_alone() -> None:
    offer = OFFER.replace("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n", "")
    assert accept_layers(offer, ANSWER) == ANSWER


@pytest.mark.parametrize(
    ("mime", "data", "key"),
    [
        ("video/VP8", b"\x10\x02\x00", True),
        ("video/VP8", b"\x11\x02\x00", False),
        ("video/H264", b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x65", True),
        ("video/H264", b"\x00\x00\x00\x01\x41\x9a", False),
        ("audio/opus", b"\xfc", True),
    ],
)
def test_keyframes(mime: str, data: bytes, key: bool) -> None:
    assert keyframe_of(mime, data) is key


def _source(kind: str = "video") -> tuple[Source, list[str]]:
    source = Source("TR_x", "PA_x", "video" if kind == "video" else "audio", "camera")
    asked: list[str] = []
    source.keyframe_requester = lambda: asked.append("pli")
    return source, asked


KEY, DELTA = b"\x10key", b"\x11delta"


async def test_a_video_outlet_starts_at_a_keyframe_and_asks_for_one() -> None:
    source, asked = _source()
    outlet = source.outlet("bob")
    assert asked == ["pli"]
    source.deliver("video/VP8", 90000, DELTA, 1000)
    source.deliver("video/VP8", 90000, KEY, 4000)
    source.deliver("video/VP8", 90000, DELTA, 7000)
    first, second = await outlet.recv(), await outlet.recv()
    assert (bytes(first), first.pts, first.time_base.denominator, second.pts) == (KEY, 0, 90000, 3000)
    assert (source.frames, source.keyframes) == (3, 1)


async def test_an_outlet_timeline_survives_an_rtp_timestamp_wrap() -> None:
    source, _ = _source("audio")
    outlet = source.outlet("bob")
    source.deliver("audio/opus", 48000, b"a", (1 << 32) - 480)
    source.deliver("audio/opus", 48000, b"b", 480)
    assert [(await outlet.recv()).pts for _ in range(2)] == [0, 960]


async def test_a_slow_video_outlet_drops_its_backlog_and_waits_for_the_next_keyframe() -> None:
    source, asked = _source()
    outlet = source.outlet("bob")
    source.deliver("video/VP8", 90000, KEY, 0)
    for i in range(1, 80):
        source.deliver("video/VP8", 90000, DELTA, i)
    assert asked == ["pli", "pli"]  # the overflow asked the publisher for a keyframe
    source.deliver("video/VP8", 90000, KEY, 99)
    assert bytes(await outlet.recv()) == KEY


async def test_an_outlet_sends_the_layer_of_its_quality_and_switches_at_a_keyframe() -> None:
    source, asked = _source()
    for layer in ("q", "h", "f"):
        source.deliver("video/VP8", 90000, DELTA, 6000, layer)
    outlet = source.outlet("bob")
    source.deliver("video/VP8", 90000, KEY, 9000, "h")  # not its layer
    source.deliver("video/VP8", 90000, KEY, 9000, "f")
    assert [bytes(await outlet.recv())] == [KEY] and not outlet._frames
    outlet.set_quality(0)  # LOW
    assert asked[-1] == "pli"
    source.deliver("video/VP8", 90000, DELTA, 12000, "q")  # not yet: q resumes at a keyframe
    source.deliver("video/VP8", 90000, DELTA, 12000, "f")  # f goes on until then
    source.deliver("video/VP8", 90000, KEY, 15000, "q")
    source.deliver("video/VP8", 90000, DELTA, 15000, "f")  # f is over
    frames = [await outlet.recv() for _ in range(2)]
    assert [(bytes(f), f.pts) for f in frames] == [(DELTA, 3000), (KEY, 6000)]
    assert not outlet._frames


class _FailingReceiver:
    """What `ReceiverTap` reads of an aiortc receiver, whose PLIs fail (its transport went away)."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    async def _handle_rtp_packet(self, packet: object, arrival_time_ms: int) -> None:
        raise AssertionError("no packet in this test")

    async def _send_rtcp_pli(self, ssrc: int) -> None:
        self.asked.append(ssrc)
        raise RuntimeError("no transport")


async def test_a_pli_that_fails_is_not_left_unretrieved(caplog: pytest.LogCaptureFixture) -> None:
    """tests/conftest.py fails this test if the PLI task's exception is left for the garbage collector."""
    caplog.set_level("DEBUG", logger="rtcstack.testing")
    receiver = _FailingReceiver()
    tap = ReceiverTap(receiver, "audio")
    tap._ssrc = 1234
    tap.request_keyframe()
    for _ in range(3):
        await asyncio.sleep(0)
    assert receiver.asked == [1234]
    assert "a PLI was not sent: RuntimeError: no transport" in caplog.messages


def test_layer_for_falls_back_to_what_arrived() -> None:
    source, _ = _source()
    assert source.layer_for(2) is None
    source.layers.update({"q", "h"})
    assert (source.layer_for(2), source.layer_for(1), source.layer_for(0)) == ("h", "h", "q")
    source.layers = {"f"}
    assert source.layer_for(0) == "f"


async def test_a_disabled_outlet_gets_nothing_and_restarts_at_a_keyframe() -> None:
    source, asked = _source()
    outlet = source.outlet("bob")
    source.deliver("video/VP8", 90000, KEY, 0)
    outlet.set_enabled(False)
    source.deliver("video/VP8", 90000, DELTA, 3000)
    outlet.set_enabled(True)
    assert asked == ["pli", "pli"]
    source.deliver("video/VP8", 90000, DELTA, 6000)
    source.deliver("video/VP8", 90000, KEY, 9000)
    assert [bytes(await outlet.recv()) for _ in range(2)] == [KEY, KEY]


async def test_a_slow_audio_outlet_keeps_the_latest_second() -> None:
    source, _ = _source("audio")
    outlet = source.outlet("bob")
    for i in range(120):
        source.deliver("audio/opus", 48000, bytes([i]), i * 960)
    assert bytes(await outlet.recv()) == bytes([70])


async def test_a_closed_source_ends_its_outlets() -> None:
    source, _ = _source("audio")
    outlet = source.outlet("bob")
    waiting = asyncio.ensure_future(outlet.recv())
    await asyncio.sleep(0)
    source.close()
    with pytest.raises(MediaStreamError):
        await waiting


def test_a_subscriber_keyframe_request_reaches_the_publisher() -> None:
    source, asked = _source()
    outlet = source.outlet("bob")
    outlet.request_keyframe()  # what a PLI / FIR on the subscriber's sender does
    assert asked == ["pli", "pli"]


def test_stats_report_what_arrived() -> None:
    source, _ = _source("audio")
    assert source.stats().last_received_at is None
    source.count_packet(level_dbov=20)
    source.deliver("audio/opus", 48000, b"\xfc", 0)
    stats = source.stats()
    assert (stats.packets, stats.frames, stats.keyframes, stats.audio_level_dbfs) == (1, 1, 1, -20.0)
    assert stats.last_received_at is not None and stats.mime_type == "audio/opus"


def test_the_synthetic_pattern_fills_its_plane_in_every_frame() -> None:
    # two sweeps across the width: the bar wraps at the edge instead of growing the row past the plane
    for count in range(2 * 320 // 8):
        plane = pattern(count, 320)
        assert len(plane) == 320 * 180, count
        assert plane[:320].count(220) == 16, count


def test_every_track_source_has_a_name() -> None:
    assert set(TRACK_SOURCE_NAMES) == set(pm.TrackSource.values())
    assert set(TRACK_SOURCE_NAMES.values()) == set(_vocab.TRACK_SOURCES)


def test_testing_exports() -> None:
    assert rtcstack.testing.__all__ == sorted(rtcstack.testing.__all__)
    assert rtcstack.testing.ReceivedTrack.__name__ == "ReceivedTrack"


async def test_a_stalled_source_counts_what_arrives_and_forwards_nothing_until_resumed() -> None:
    source, asked = _source()
    outlet = source.outlet("bob")
    source.deliver("video/VP8", 90000, KEY, 1000)
    source.stall("no_packets")
    source.deliver("video/VP8", 90000, DELTA, 4000)
    asked.clear()
    source.resume()
    assert asked == ["pli"]  # the publisher is asked for a keyframe at once
    source.deliver("video/VP8", 90000, DELTA, 7000)  # a delta after the gap: not decodable, not sent
    source.deliver("video/VP8", 90000, KEY, 10000)
    assert [bytes(await outlet.recv()), bytes(await outlet.recv())] == [KEY, KEY]
    assert (source.frames, source.keyframes) == (4, 2)


async def test_a_frozen_source_forwards_frames_no_decoder_accepts() -> None:
    source, _ = _source()
    outlet = source.outlet("bob")  # waiting for a keyframe: it takes the frozen frames all the same
    source.stall("no_frames")
    source.deliver("video/VP8", 90000, KEY, 1000)
    source.deliver("video/VP8", 90000, DELTA, 4000)
    frozen = [bytes(await outlet.recv()), bytes(await outlet.recv())]
    assert frozen == [undecodable("video/VP8")] * 2 and (source.frames, source.keyframes) == (2, 1)
    h264, _ = _source()
    h264_outlet = h264.outlet("bob")
    h264.stall("no_frames")
    h264.deliver("video/H264", 90000, b"\x00\x00\x00\x01\x41", 1000)  # no undecodable H.264 frame: not sent
    h264.resume()
    h264.deliver("video/H264", 90000, b"\x00\x00\x00\x01\x65", 4000)
    assert bytes(await h264_outlet.recv()) == b"\x00\x00\x00\x01\x65"  # the first it sends


def test_the_undecodable_vp8_frame_announces_more_than_it_holds() -> None:
    frame = undecodable("video/VP8")
    assert frame is not None and undecodable("video/H264") is None
    tag = int.from_bytes(frame[:3], "little")
    assert tag & 1 == 1 and not keyframe_of("video/VP8", frame)  # an interframe...
    assert tag >> 5 > len(frame)  # ...whose first partition is longer than the frame


def test_a_stall_holds_for_tracks_published_later_until_resumed() -> None:
    registry = RoomRegistry(0)
    alice = Participant(room="demo", info=pm.ParticipantInfo(identity="alice", sid="PA_alice"))
    registry.join(alice)
    router = MediaRouter(registry)
    router.stall("alice", ["camera", "microphone"], "no_packets")
    camera, mic = Source("TR_c", "PA_alice", "video", "camera"), Source("TR_m", "PA_alice", "audio", "microphone")
    screen = Source("TR_s", "PA_alice", "video", "screen_share")
    for source in (camera, mic, screen):
        router.publish(alice, source)
    assert (camera.stalled, mic.stalled, screen.stalled) == ("no_packets", "no_packets", None)
    router.resume("alice", ["camera"])
    later = Source("TR_c2", "PA_alice", "video", "camera")
    router.publish(alice, later)
    assert (camera.stalled, later.stalled, mic.stalled) == (None, None, "no_packets")
