"""Media in from one client: the tracks it announces (AddTrackRequest), matched to the media that then arrives on
its m-lines, published to the room's router, and withdrawn when the client stops sending them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from ._forward import Source
from ._media import OfferedSection
from ._rooms import Participant, RoomRegistry, new_sid
from ._router import MediaRouter
from ._tables import TRACK_SOURCE_NAMES

__all__ = ["Uplink", "announced_track"]

logger = logging.getLogger("rtcstack.testing")

_FORWARDED_VIDEO = ("", "vp8", "h264")
"""Video codecs an AddTrackRequest may ask for (empty: the SDK's default, VP8)."""


def announced_track(add: pr.AddTrackRequest) -> pm.TrackInfo:
    """The TrackInfo LiveKit answers an AddTrackRequest with: its fields echoed (the SDK checks them), a new sid,
    the codecs' mime types, and `TF_NO_DTX` added for `disable_dtx` (the SDK reads DTX off from there)."""
    features = list(add.audio_features)
    if add.disable_dtx and pm.TF_NO_DTX not in features:
        features.append(pm.TF_NO_DTX)
    track = pm.TrackInfo(
        sid=add.sid or new_sid("TR"),
        type=add.type,
        name=add.name,
        muted=add.muted,
        width=add.width,
        height=add.height,
        simulcast=len(add.layers) > 1,
        disable_dtx=add.disable_dtx,
        source=add.source,
        layers=add.layers,
        stereo=add.stereo,
        disable_red=add.disable_red,
        encryption=add.encryption,
        stream=add.stream,
        audio_features=features,
        backup_codec_policy=add.backup_codec_policy,
        packet_trailer_features=add.packet_trailer_features,
        codecs=[
            pm.SimulcastCodecInfo(mime_type=_mime(add.type, c.codec), cid=c.cid, layers=c.layers)
            for c in add.simulcast_codecs
        ],
    )
    if add.simulcast_codecs and add.simulcast_codecs[0].codec:
        track.mime_type = track.codecs[0].mime_type
    elif add.type == pm.AUDIO:
        track.mime_type = "audio/opus"  # what the server receives: it answers without RED
    return track


def _mime(kind: pm.TrackType, codec: str) -> str:
    """LiveKit's mime type for an AddTrackRequest codec name (``vp8`` -> ``video/VP8``, ``opus`` -> ``audio/opus``)."""
    return f"audio/{codec.lower()}" if kind == pm.AUDIO else f"video/{codec.upper()}"


class Uplink:
    """What one participant publishes: announced tracks waiting for their media, and the m-lines carrying it."""

    def __init__(
        self,
        participant: Participant,
        registry: RoomRegistry,
        router: MediaRouter,
        send: Callable[[pr.SignalResponse], None],
    ) -> None:
        self._participant = participant
        self._registry = registry
        self._router = router
        self._send = send
        self._closed = False
        self._adding: dict[str, pm.TrackInfo] = {}
        """Tracks announced by AddTrackRequest whose media has not arrived yet, by client track id (cid)."""
        self._inbound: dict[str, str] = {}
        """mid -> track sid of what the client publishes."""

    def __repr__(self) -> str:
        return f"<Uplink of {self._participant.identity}>"

    def add_track(self, add: pr.AddTrackRequest) -> None:
        """Announce the track (TrackPublishedResponse, and to the room), or refuse a video codec we cannot forward."""
        logger.debug("%r: add_track %s", self, str(add).replace("\n", " "))
        refused = [c.codec for c in add.simulcast_codecs if c.codec.lower() not in _FORWARDED_VIDEO]
        if add.type == pm.VIDEO and refused:
            message = f"codec {refused[0]} is not supported by the loopback server (it forwards VP8, H264 and Opus)"
            logger.info("%r: refused track %s: %s", self, add.cid, message)
            refusal = pr.RequestResponse(reason=pr.RequestResponse.UNSUPPORTED_TYPE, message=message, add_track=add)
            self._send(pr.SignalResponse(request_response=refusal))
            return
        track = announced_track(add)
        self._adding[add.cid] = track
        self._send(pr.SignalResponse(track_published=pr.TrackPublishedResponse(cid=add.cid, track=track)))
        self._registry.publish_track(self._participant, track)

    def inbound(self, section: OfferedSection, mime_type: str) -> Source | None:
        """The client started sending a track on ``section``: the source its media goes to, once it is announced
        (matched by cid, else the oldest announced track of the same kind); None for media nobody announced."""
        track = self._adding.pop(section.track_id, None)
        if track is None:
            track_type = pm.AUDIO if section.kind == "audio" else pm.VIDEO
            cid = next((c for c, t in self._adding.items() if t.type == track_type), None)
            track = self._adding.pop(cid) if cid is not None else None
        if track is None:
            logger.debug("%r: media on mid %s for no announced track", self, section.mid)
            return None
        self._inbound[section.mid] = track.sid
        for published in self._participant.info.tracks:  # the announced copy: announced again once published
            if published.sid == track.sid:
                published.mime_type = mime_type
                published.mid = section.mid
        kind: Literal["audio", "video"] = "audio" if section.kind == "audio" else "video"
        source = Source(track.sid, self._participant.sid, kind, TRACK_SOURCE_NAMES.get(track.source, "unknown"))
        source.mime_type = mime_type
        asyncio.get_running_loop().call_soon(self._publish, source)
        return source

    def _publish(self, source: Source) -> None:
        if not self._closed and not source.closed:
            self._registry.update(self._participant)  # announces the track's codec and mid, now known
            self._router.publish(self._participant, source)

    def inbound_ended(self, mid: str) -> None:
        """The client stopped sending on ``mid``: it unpublished that track."""
        track_sid = self._inbound.pop(mid, None)
        if track_sid is None:
            return
        self._router.unpublish(track_sid)
        if self._registry.unpublish_track(self._participant, track_sid):
            self._send(pr.SignalResponse(track_unpublished=pr.TrackUnpublishedResponse(track_sid=track_sid)))

    def close(self) -> None:
        """Withdraw everything the client publishes; media that arrives later is published no more."""
        self._closed = True
        for track_sid in self._inbound.values():
            self._router.unpublish(track_sid)
