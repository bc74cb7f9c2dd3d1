"""Forwarding without transcoding: encoded frames from a publisher's receiver to a bounded outlet per subscriber.

The shape is aiortc's ``MediaRelay``: one `Source` per published track reads encoded frames straight out of aiortc's
receiver (its jitter buffer assembles them; the decoder thread is never fed), and fans them out to one `Outlet` per
subscriber. An outlet is an aiortc track whose ``recv()`` returns ``av.Packet``: aiortc's sender packs those with its
encoder's ``pack()`` instead of encoding, so frame trailers and E2EE payloads arrive as they were sent. A slow
subscriber keeps only the latest frames: an outlet that overflows drops what it holds, and video then waits for the
next keyframe, asking the publisher for one (as a subscriber's own PLI / FIR does).
"""

from __future__ import annotations

import asyncio
import datetime
import fractions
import logging
import math
import queue
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import av
from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import NackGenerator
from pydantic import BaseModel, ConfigDict

from .._tasks import Tasks
from .._vocab import TrackSourceName

__all__ = ["STALL_MODES", "Outlet", "ReceivedTrack", "ReceiverTap", "Source", "StallMode", "keyframe_of", "undecodable"]

logger = logging.getLogger("rtcstack.testing")

_AUDIO_OUTLET = 50
"""Frames an audio outlet holds (20 ms each: one second) before it drops the oldest."""
_VIDEO_OUTLET = 60
"""Frames a video outlet holds before it starts over from the next keyframe."""
_HIGH = 2
"""LiveKit's VideoQuality.HIGH: what an outlet sends until its subscriber asks for less."""
_KEYFRAME_RETRY = 0.5
"""Seconds between keyframe requests of an outlet waiting for one."""
_RID_QUALITY = {"q": 0, "h": 1, "f": 2}
"""LiveKit's simulcast rids and the VideoQuality each carries (LOW, MEDIUM, HIGH)."""


StallMode = Literal["no_packets", "no_frames"]
STALL_MODES: tuple[StallMode, ...] = ("no_packets", "no_frames")
"""How a stalled source fails its subscribers: nothing forwarded, or (video) packets no decoder accepts."""

_UNDECODABLE_VP8 = bytes([0xF1, 0xFF, 0xFF]) + bytes(13)
"""A VP8 interframe whose frame tag announces a first partition of 512 KiB in 16 bytes: every decoder refuses it."""


def undecodable(mime_type: str) -> bytes | None:
    """A frame in ``mime_type`` that arrives whole and that no decoder accepts; None for a codec we have none for."""
    return _UNDECODABLE_VP8 if mime_type.lower() == "video/vp8" else None


class ReceivedTrack(BaseModel):
    """What the server received from one track a participant publishes (`LoopbackServer.received`)."""

    model_config = ConfigDict(frozen=True)

    track_sid: str
    source: TrackSourceName
    kind: Literal["audio", "video"]
    mime_type: str
    """The codec, e.g. ``audio/opus`` or ``video/VP8``; empty until the first frame."""
    packets: int
    """RTP packets received."""
    frames: int
    """Encoded frames assembled from them (what subscribers are sent)."""
    keyframes: int
    """Video keyframes among the frames (every audio frame counts as one)."""
    last_received_at: datetime.datetime | None
    """When the last packet arrived (aware, UTC)."""
    audio_level_dbfs: float | None
    """Audio level of the latest packets in dBFS (0 is full scale, -127 silence); None for video or before media."""


def keyframe_of(mime_type: str, data: bytes) -> bool:
    """Whether an encoded frame (as aiortc's jitter buffer assembles it) is a keyframe."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return bool(data) and not data[0] & 0x01
    if mime == "video/h264":
        return any(nal and nal[0] & 0x1F in (5, 7) for nal in data.split(b"\x00\x00\x01"))
    return True


class Outlet(MediaStreamTrack):
    """One subscriber's view of a `Source`: an aiortc track of pre-encoded ``av.Packet``s, bounded, keep-latest.

    Of a simulcast source it sends one layer: the one for its ``quality`` (LOW, MEDIUM, HIGH as in LiveKit's
    VideoQuality) among those arriving. A new layer starts at its first keyframe (asked for), and until then the
    old one goes on; the packets' timestamps make one continuous timeline across layers and RTP wraps.
    """

    def __init__(self, source: Source, subscriber: str) -> None:
        super().__init__()
        self.kind = source.kind
        self._id = source.track_sid
        self.source = source
        self.subscriber = subscriber
        self.quality = _HIGH
        self.enabled = True
        self.held = False
        """While held, frames are dropped (see `hold`)."""
        self._frames: deque[av.Packet[Any]] = deque()
        self._limit = _AUDIO_OUTLET if source.kind == "audio" else _VIDEO_OUTLET
        self._ready = asyncio.Event()
        self._need_keyframe = source.kind == "video"
        self._layer: str | None = None
        self._asked_at = 0.0
        self._last_in: int | None = None
        self._last_out = 0

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds``, then start again at a keyframe, asked for then.

        For an outlet bound in an answer: our sender starts when we apply the answer, before the client has; video
        it decodes that early misses the SDK's per-track setup (the frame trailer's metadata, for one).
        """
        self.held = True
        asyncio.get_running_loop().call_later(seconds, self._release)

    def _release(self) -> None:
        self.held = False
        self.restart()

    def restart(self) -> None:
        """Start again from a keyframe, asked for now (video)."""
        if self.kind == "video" and self.readyState == "live":
            self._need_keyframe = True
            self._asked_at = 0.0
            self._ask_keyframe()

    def set_quality(self, quality: int) -> None:
        """Send the layer for ``quality`` from now on (from its next keyframe)."""
        self.quality = quality
        if self.source.layer_for(quality) != self._layer:
            self._asked_at = 0.0
            self._ask_keyframe()

    def _ask_keyframe(self) -> None:
        """Ask the publisher for a keyframe, again every `_KEYFRAME_RETRY` s while waiting (libwebrtc may ignore a
        request that comes soon after a keyframe)."""
        now = time.monotonic()
        if now - self._asked_at >= _KEYFRAME_RETRY:
            self._asked_at = now
            self.source.request_keyframe()

    def set_enabled(self, enabled: bool) -> None:
        """A subscriber that disables a track gets nothing until it enables it again (from a keyframe)."""
        if enabled and not self.enabled:
            self.restart()
        self.enabled = enabled

    def put(self, data: bytes, timestamp: int, clock_rate: int, keyframe: bool, layer: str | None) -> None:
        """Offer one encoded frame of ``layer``; overflow drops the oldest audio, or restarts video at a keyframe."""
        if self.readyState != "live" or self.held or not self.enabled:
            return
        target = self.source.layer_for(self.quality)
        if layer != self._layer:
            if layer != target:
                return
            if not keyframe:
                self._ask_keyframe()
                return
            switched = self._layer is not None
            logger.debug("%s gets layer %s of %r", self.subscriber, layer, self.source)
            self._layer, self._need_keyframe = layer, False
            if switched:
                self._last_in = None  # a new timeline: continue ours a frame later
        if self._need_keyframe and not keyframe:
            self._ask_keyframe()
            return
        self._need_keyframe = False
        if len(self._frames) >= self._limit:
            if self.kind == "audio":
                self._frames.popleft()
            else:
                self._frames.clear()
                if not keyframe:
                    self._need_keyframe = True
                    self._ask_keyframe()
                    return
        self._frames.append(self._packet(data, timestamp, clock_rate))
        self._ready.set()

    def _packet(self, data: bytes, timestamp: int, clock_rate: int) -> av.Packet[Any]:
        if self._last_in is None:
            step = clock_rate // 30 if self._frames or self._last_out else 0
        else:
            step = (timestamp - self._last_in) & 0xFFFFFFFF
            if step >= 1 << 31:  # older than the last one: keep the timeline monotonic
                step = 0
        self._last_in, self._last_out = timestamp, self._last_out + step
        packet = av.Packet(data)
        packet.pts = self._last_out
        packet.time_base = fractions.Fraction(1, clock_rate)
        return packet

    def request_keyframe(self) -> None:
        """The subscriber lost a picture (PLI / FIR on our sender): ask the publisher, for the layer being sent."""
        self.source.request_keyframe()

    async def recv(self) -> av.Packet[Any]:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class Source:
    """One published track on the server: counts what arrives and fans encoded frames out to its outlets.

    ``layers`` holds the simulcast layers (rids ``q``, ``h``, ``f``: LOW, MEDIUM, HIGH) that have arrived.
    """

    def __init__(
        self, track_sid: str, owner_sid: str, kind: Literal["audio", "video"], source: TrackSourceName
    ) -> None:
        self.track_sid = track_sid
        self.owner_sid = owner_sid
        self.kind = kind
        self.source = source
        self.mime_type = ""
        self.layers: set[str] = set()
        self.outlets: list[Outlet] = []
        self.closed = False
        self.packets = 0
        self.frames = 0
        self.keyframes = 0
        self.last_received_at: datetime.datetime | None = None
        self.audio_level_dbfs: float | None = None
        self.keyframe_requester: Callable[[], None] | None = None
        self.on_frame: Callable[[], None] | None = None
        """Called after each frame is delivered (set by the router when the source is published)."""
        self.stalled: StallMode | None = None
        """Set by `stall`: frames are still received and counted, but not forwarded as they are."""

    def __repr__(self) -> str:
        return f"<Source {self.kind} {self.track_sid} outlets={len(self.outlets)}>"

    def outlet(self, subscriber: str) -> Outlet:
        """A new outlet for ``subscriber``; video ones start at the next keyframe, which is asked for now."""
        outlet = Outlet(self, subscriber)
        self.outlets.append(outlet)
        self.request_keyframe()
        return outlet

    def drop(self, outlet: Outlet) -> None:
        outlet.stop()
        if outlet in self.outlets:
            self.outlets.remove(outlet)

    def layer_for(self, quality: int) -> str | None:
        """The arrived layer that serves ``quality`` (its own, else the nearest below, else the lowest)."""
        arrived = sorted((_RID_QUALITY.get(rid, 0), rid) for rid in self.layers)
        if not arrived:
            return None
        below = [rid for level, rid in arrived if level <= quality]
        return below[-1] if below else arrived[0][1]

    def stall(self, mode: StallMode) -> None:
        """Stop forwarding to the outlets (``no_packets``), or forward video frames no decoder accepts instead of
        this track's (``no_frames``; a codec with no such frame forwards nothing)."""
        self.stalled = mode

    def resume(self) -> None:
        """Forward again; video outlets start from a keyframe, asked for now, so the decoders recover at once."""
        if self.stalled is not None:
            self.stalled = None
            for outlet in self.outlets:
                outlet.restart()

    def request_keyframe(self) -> None:
        if self.kind == "video" and self.keyframe_requester is not None:
            self.keyframe_requester()

    def count_packet(self, level_dbov: int | None = None) -> None:
        self.packets += 1
        self.last_received_at = datetime.datetime.now(datetime.timezone.utc)
        if level_dbov is not None:
            self.audio_level_dbfs = -float(level_dbov)

    def deliver(self, mime_type: str, clock_rate: int, data: bytes, timestamp: int, layer: str | None = None) -> None:
        """One encoded frame of ``layer`` (RTP ``timestamp`` in ``clock_rate`` units) for every outlet."""
        self.mime_type = mime_type
        if layer is not None and layer not in self.layers:
            logger.debug("%r: layer %s arrived", self, layer)
            self.layers.add(layer)
        keyframe = keyframe_of(mime_type, data)
        self.frames += 1
        self.keyframes += keyframe
        if self.stalled is not None:
            garbage = undecodable(mime_type) if self.stalled == "no_frames" and self.kind == "video" else None
            if garbage is None:
                return
            data, keyframe = garbage, True  # taken by an outlet waiting for a keyframe too: packets always flow
        for outlet in list(self.outlets):
            outlet.put(data, timestamp, clock_rate, keyframe, layer)
        if self.on_frame is not None:
            self.on_frame()

    def deliver_level(self, rms: float) -> None:
        """The level of synthetic audio, from its samples (full scale = 1.0)."""
        self.audio_level_dbfs = max(-127.0, 20 * math.log10(rms)) if rms > 0 else -127.0

    def stats(self) -> ReceivedTrack:
        return ReceivedTrack(
            track_sid=self.track_sid,
            source=self.source,
            kind=self.kind,
            mime_type=self.mime_type,
            packets=self.packets,
            frames=self.frames,
            keyframes=self.keyframes,
            last_received_at=self.last_received_at,
            audio_level_dbfs=self.audio_level_dbfs if self.kind == "audio" else None,
        )

    def close(self) -> None:
        """End every outlet (their senders then idle until the subscriber's transceiver goes)."""
        self.closed = True
        for outlet in self.outlets:
            outlet.stop()
        self.outlets.clear()


class _EncodedTap:
    """Stands in for an aiortc receiver's decoder queue: frames go to ``deliver``; only the stop signal is queued."""

    def __init__(self, deliver: Callable[[Any, Any], None]) -> None:
        self._deliver = deliver
        self._stop: queue.Queue[None] = queue.Queue()

    def put(self, item: tuple[Any, Any] | None) -> None:
        if item is None:
            self._stop.put(None)
        else:
            self._deliver(*item)

    def get(self) -> None:
        return self._stop.get()


class _PerStream:
    """Stands in for one of a receiver's single-stream helpers (jitter buffer, NACK generator): one per SSRC.

    aiortc's receiver assumes one stream per m-line; simulcast sends one per layer.
    """

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._streams: dict[int, Any] = {}
        self._current: Any = None

    def add(self, packet: Any) -> Any:
        self._current = self._streams.get(packet.ssrc)
        if self._current is None:
            self._current = self._streams[packet.ssrc] = self._make()
        return self._current.add(packet)

    @property
    def missing(self) -> Any:
        """The NACK generator's missing set, of the stream of the last packet (read right after ``add``)."""
        return self._current.missing


class _RawTimestamps:
    """Stands in for a receiver's timestamp mapper: outlets keep their own timelines, per layer."""

    @staticmethod
    def map(timestamp: int) -> int:
        return timestamp


class ReceiverTap:
    """Takes one aiortc receiver's encoded frames (before any decoding) into its current `source`.

    aiortc passes each frame its jitter buffer completes to a decoder thread through a queue; the queue is replaced
    by a tap, so the thread only ever waits for its stop signal (the tap must be installed before the receiver
    starts). Each RTP packet is counted on the way in, with the audio level header extension when there is one.
    Its jitter buffer and NACK generator become one per SSRC, so the layers of a simulcast track (told apart by
    the RID header extension of their first packets) are assembled apart, and a frame is delivered with its layer.
    ``source`` changes when the client reuses the m-line for a new track.
    """

    def __init__(self, receiver: Any, kind: str) -> None:
        self.source: Source | None = None
        self._receiver = receiver
        self._ssrc: int | None = None
        self._rids: dict[int, str] = {}
        self._handle = receiver._handle_rtp_packet
        self._tasks = Tasks("receiver tap", logger)
        receiver._RTCRtpReceiver__decoder_queue = _EncodedTap(self._deliver)
        receiver._RTCRtpReceiver__timestamp_mapper = _RawTimestamps()
        if kind == "video":
            receiver._RTCRtpReceiver__jitter_buffer = _PerStream(lambda: JitterBuffer(capacity=512, is_video=True))
            receiver._RTCRtpReceiver__nack_generator = _PerStream(NackGenerator)
        receiver._handle_rtp_packet = self._handle_rtp_packet

    def bind(self, source: Source) -> None:
        self.source = source
        source.keyframe_requester = self.request_keyframe

    def _deliver(self, codec: Any, frame: Any) -> None:
        if self.source is not None and self._ssrc is not None:
            data, timestamp = bytes(frame.data), int(frame.timestamp)
            self.source.deliver(str(codec.mimeType), int(codec.clockRate), data, timestamp, self._rids.get(self._ssrc))

    async def _handle_rtp_packet(self, packet: Any, arrival_time_ms: int) -> None:
        # aiortc's transport awaits each packet's handling before the next, so _ssrc is this frame's in _deliver
        rid = packet.extensions.rtp_stream_id
        if rid:
            self._rids.setdefault(packet.ssrc, rid)
        if self.source is not None:
            level = packet.extensions.audio_level
            self.source.count_packet(level[1] if level is not None else None)
        self._ssrc = packet.ssrc
        await self._handle(packet, arrival_time_ms)

    def request_keyframe(self) -> None:
        """Send the publisher a PLI for every stream of the track.

        Every layer, not the one wanted: libwebrtc 1.2.1's simulcast answered a PLI on one layer's SSRC with a
        keyframe on another layer.
        """
        for ssrc in set(self._rids) | ({self._ssrc} if self._ssrc is not None else set()):
            self._tasks.spawn(self._send_pli(ssrc), f"PLI for {ssrc}")

    async def _send_pli(self, ssrc: int) -> None:
        try:
            await self._receiver._send_rtcp_pli(ssrc)
        except Exception as exc:  # the transport closing under it: expected, not an error
            logger.debug("a PLI was not sent: %s: %s", type(exc).__name__, exc)
