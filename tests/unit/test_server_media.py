"""The loopback SFU's pure parts: SDP reading and answering, outlets, keyframes, tables (no sockets)."""

from __future__ import annotations

import asyncio

import pytest
from aiortc.mediastreams import MediaStreamError
from livekit.protocol import models as pm

import rtcstack.testing
from rtcstack import _vocab
from rtcstack.testing._forward import Source, keyframe_of
from rtcstack.testing._media import accept_top_layer, offered_sections, unsupported
from rtcstack.testing._tables import TRACK_SOURCE_NAMES

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


def test_answer_accepts_the_rid_extension_everywhere_and_only_the_top_layer() -> None:
    answer = accept_top_layer(OFFER, ANSWER)
    sections = answer.split("m=")
    assert "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in sections[2]
    assert "a=rid:f recv\r\na=simulcast:recv f" in sections[2] and "a=rid:q" not in answer
    assert "a=extmap:10" in sections[3] and "a=simulcast" not in sections[3]  # recvonly: the extension only
    assert "extmap" not in sections[1]  # audio
    assert answer.endswith("\r\n") and "\n\n" not in answer


def test_an_offer_without_rid_leaves_the_answer_alone() -> None:
    offer = OFFER.replace("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n", "")
    assert accept_top_layer(offer, ANSWER) == ANSWER


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


async def test_a_video_outlet_starts_at_a_keyframe_and_asks_for_one() -> None:
    source, asked = _source()
    outlet = source.outlet("bob")
    assert asked == ["pli"]
    source.deliver("video/VP8", 90000, b"\x11delta", 0)
    source.deliver("video/VP8", 90000, b"\x10key", 3000)
    packet = await outlet.recv()
    assert (bytes(packet), packet.pts, packet.time_base.denominator) == (b"\x10key", 3000, 90000)
    assert (source.frames, source.keyframes) == (2, 1)


async def test_a_slow_video_outlet_drops_its_backlog_and_waits_for_the_next_keyframe() -> None:
    source, asked = _source()
    outlet = source.outlet("bob")
    source.deliver("video/VP8", 90000, b"\x10key", 0)
    for i in range(1, 80):
        source.deliver("video/VP8", 90000, b"\x11delta", i)
    assert asked == ["pli", "pli"]  # the overflow asked the publisher for a keyframe
    source.deliver("video/VP8", 90000, b"\x10key", 99)
    assert bytes(await outlet.recv()) == b"\x10key"


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


def test_every_track_source_has_a_name() -> None:
    assert set(TRACK_SOURCE_NAMES) == set(pm.TrackSource.values())
    assert set(TRACK_SOURCE_NAMES.values()) == set(_vocab.TRACK_SOURCES)


def test_testing_exports() -> None:
    assert rtcstack.testing.__all__ == sorted(rtcstack.testing.__all__)
    assert rtcstack.testing.ReceivedTrack.__name__ == "ReceivedTrack"
