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
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from pydantic import BaseModel, ConfigDict

from .._vocab import TrackSourceName

__all__ = ["Outlet", "ReceivedTrack", "ReceiverTap", "Source", "keyframe_of"]

logger = logging.getLogger("rtcstack.testing")

_AUDIO_OUTLET = 50
"""Frames an audio outlet holds (20 ms each: one second) before it drops the oldest."""
_VIDEO_OUTLET = 60
"""Frames a video outlet holds before it starts over from the next keyframe."""


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
    """One subscriber's view of a `Source`: an aiortc track of pre-encoded ``av.Packet``s, bounded, keep-latest."""

    def __init__(self, source: Source, subscriber: str) -> None:
        super().__init__()
        self.kind = source.kind
        self._id = source.track_sid
        self.source = source
        self.subscriber = subscriber
        self._frames: deque[av.Packet[Any]] = deque()
        self._limit = _AUDIO_OUTLET if source.kind == "audio" else _VIDEO_OUTLET
        self._ready = asyncio.Event()
        self._need_keyframe = source.kind == "video"

    def put(self, packet: av.Packet[Any], keyframe: bool) -> None:
        """Queue one encoded frame; overflow drops the oldest audio, or restarts video at the next keyframe."""
        if self.readyState != "live":
            return
        if self._need_keyframe and not keyframe:
            return
        self._need_keyframe = False
        if len(self._frames) >= self._limit:
            if self.kind == "audio":
                self._frames.popleft()
            else:
                self._frames.clear()
                if not keyframe:
                    self._need_keyframe = True
                    self.source.request_keyframe()
                    return
        self._frames.append(packet)
        self._ready.set()

    def request_keyframe(self) -> None:
        """The subscriber lost a picture (PLI / FIR on our sender): ask the publisher."""
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
    """One published track on the server: counts what arrives and fans encoded frames out to its outlets."""

    def __init__(
        self, track_sid: str, owner_sid: str, kind: Literal["audio", "video"], source: TrackSourceName
    ) -> None:
        self.track_sid = track_sid
        self.owner_sid = owner_sid
        self.kind = kind
        self.source = source
        self.mime_type = ""
        self.outlets: list[Outlet] = []
        self.closed = False
        self.packets = 0
        self.frames = 0
        self.keyframes = 0
        self.last_received_at: datetime.datetime | None = None
        self.audio_level_dbfs: float | None = None
        self.keyframe_requester: Callable[[], None] | None = None
        self._clock_rate = 48000 if kind == "audio" else 90000

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

    def request_keyframe(self) -> None:
        if self.kind == "video" and self.keyframe_requester is not None:
            self.keyframe_requester()

    def count_packet(self, level_dbov: int | None = None) -> None:
        self.packets += 1
        self.last_received_at = datetime.datetime.now(datetime.timezone.utc)
        if level_dbov is not None:
            self.audio_level_dbfs = -float(level_dbov)

    def deliver(self, mime_type: str, clock_rate: int, data: bytes, timestamp: int) -> None:
        """One encoded frame (``timestamp`` in ``clock_rate`` units from the track's start) for every outlet."""
        self.mime_type = mime_type
        self._clock_rate = clock_rate
        keyframe = keyframe_of(mime_type, data)
        self.frames += 1
        self.keyframes += keyframe
        for outlet in list(self.outlets):
            packet = av.Packet(data)
            packet.pts = timestamp
            packet.time_base = fractions.Fraction(1, clock_rate)
            outlet.put(packet, keyframe)

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


class ReceiverTap:
    """Takes one aiortc receiver's encoded frames (before any decoding) into its current `source`.

    aiortc passes each frame its jitter buffer completes to a decoder thread through a queue; the queue is replaced
    by a tap, so the thread only ever waits for its stop signal (the tap must be installed before the receiver
    starts). Each RTP packet is counted on the way in, with the audio level header extension when there is one,
    and its SSRC kept for keyframe requests. ``source`` changes when the client reuses the m-line for a new track.
    """

    def __init__(self, receiver: Any) -> None:
        self.source: Source | None = None
        self._receiver = receiver
        self._ssrc: int | None = None
        self._handle = receiver._handle_rtp_packet
        self._tasks: set[asyncio.Future[None]] = set()
        receiver._RTCRtpReceiver__decoder_queue = _EncodedTap(self._deliver)
        receiver._handle_rtp_packet = self._handle_rtp_packet

    def bind(self, source: Source) -> None:
        self.source = source
        source.keyframe_requester = self.request_keyframe

    def _deliver(self, codec: Any, frame: Any) -> None:
        if self.source is not None:
            self.source.deliver(str(codec.mimeType), int(codec.clockRate), bytes(frame.data), int(frame.timestamp))

    async def _handle_rtp_packet(self, packet: Any, arrival_time_ms: int) -> None:
        if self.source is not None:
            level = packet.extensions.audio_level
            self.source.count_packet(level[1] if level is not None else None)
        self._ssrc = packet.ssrc
        await self._handle(packet, arrival_time_ms)

    def request_keyframe(self) -> None:
        """Send the publisher a PLI for the stream being received."""
        if self._ssrc is not None:
            task = asyncio.ensure_future(self._receiver._send_rtcp_pli(self._ssrc))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
