"""Media out to one client: an outlet per track it is sent, its subscriptions and its per-track settings."""

from __future__ import annotations

import logging
from collections.abc import Callable

from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from ._forward import Outlet, Source
from ._negotiation import Negotiation
from ._rooms import Participant, RoomRegistry
from ._router import MediaRouter

__all__ = ["Downlink", "quality_for_width"]

logger = logging.getLogger("rtcstack.testing")


def quality_for_width(layers: list[pm.VideoLayer], width: int) -> pm.VideoQuality:
    """The layer a subscriber showing a track ``width`` pixels wide gets: the smallest at least as wide, else the
    largest (HIGH when the track announced no layers)."""
    ordered = sorted(layers, key=lambda layer: layer.quality)
    wide = [layer.quality for layer in ordered if layer.width >= width]
    return wide[0] if wide else (ordered[-1].quality if ordered else pm.HIGH)


class Downlink:
    """The tracks one client is sent (by auto-subscribe or its own subscriptions), each through its `Outlet`."""

    def __init__(
        self,
        participant: Participant,
        registry: RoomRegistry,
        router: MediaRouter,
        negotiation: Negotiation,
        send: Callable[[pr.SignalResponse], None],
        *,
        auto_subscribe: bool,
    ) -> None:
        self._participant = participant
        self._registry = registry
        self._router = router
        self._negotiation = negotiation
        self._send = send
        self.auto_subscribe = auto_subscribe
        self._closed = False
        self._outlets: dict[str, Outlet] = {}
        """track sid -> outlet of what the client is sent."""
        self._wanted: set[str] = set()
        """Tracks the client subscribed to whose media has not arrived yet (sent once it does)."""

    def __repr__(self) -> str:
        return f"<Downlink of {self._participant.identity}>"

    def wants(self, track_sid: str) -> bool:
        """Whether the client is to be sent ``track_sid`` when its media arrives (auto-subscribe, or it asked)."""
        return self.auto_subscribe or track_sid in self._wanted

    def receives(self, track_sids: set[str]) -> bool:
        """Whether the client is sent one of these tracks."""
        return not self._outlets.keys().isdisjoint(track_sids)

    def attach(self, source: Source) -> None:
        """Send ``source`` to the client (nothing if it is sent already)."""
        if self._closed or source.closed or source.track_sid in self._outlets:
            return
        self._wanted.discard(source.track_sid)
        outlet = source.outlet(self._participant.identity)
        self._outlets[source.track_sid] = outlet
        logger.debug("%r subscribes to %r", self, source)
        self._negotiation.add_outlet(outlet, f"{source.owner_sid}|{source.track_sid}")
        if self._outlets.get(source.track_sid) is outlet:  # not refused at once
            self._negotiation.negotiate()
            self._router.subscribed(source.track_sid)

    def refused(self, outlet: Outlet) -> None:
        """The client cannot receive ``outlet``'s codec: as LiveKit, the subscription ends with a SubscriptionResponse
        (SE_CODEC_UNSUPPORTED)."""
        sid = outlet.source.track_sid
        if self._outlets.get(sid) is outlet:
            del self._outlets[sid]
        outlet.source.drop(outlet)
        logger.info("%r: cannot subscribe to %s: it takes no %s", self, sid, outlet.source.mime_type)
        refusal = pr.SubscriptionResponse(track_sid=sid, err=pm.SE_CODEC_UNSUPPORTED)
        self._send(pr.SignalResponse(subscription_response=refusal))

    def detach(self, track_sid: str) -> None:
        """Stop sending the track ``track_sid`` to the client."""
        outlet = self._outlets.pop(track_sid, None)
        if outlet is None:
            return
        logger.debug("%r unsubscribes from %r", self, outlet.source)
        outlet.source.drop(outlet)
        self._negotiation.remove_outlet(outlet)

    def update_subscription(self, update: pr.UpdateSubscription) -> None:
        """Subscribe or unsubscribe, as LiveKit does: a track announced whose media has not arrived yet is sent once
        it does; a track the room does not have gets a SubscriptionResponse with SE_TRACK_NOTFOUND."""
        sids = list(update.track_sids)
        for tracks in update.participant_tracks:
            sids.extend(tracks.track_sids)
        for sid in sids:
            source = self._router.source(sid)
            if not update.subscribe:
                self._wanted.discard(sid)
                self.detach(sid)
            elif source is not None:
                self.attach(source)
            elif self._track_info(sid) is not None:
                self._wanted.add(sid)
            else:
                logger.info("%r: cannot subscribe to %s: no such track", self, sid)
                refusal = pr.SubscriptionResponse(track_sid=sid, err=pm.SE_TRACK_NOTFOUND)
                self._send(pr.SignalResponse(subscription_response=refusal))

    def update_track_settings(self, settings: pr.UpdateTrackSettings) -> None:
        """Enable / disable and pick the layer (by quality, or by the size the subscriber shows it at)."""
        logger.debug("%r: track settings %s", self, str(settings).replace("\n", " "))
        for sid in settings.track_sids:
            outlet = self._outlets.get(sid)
            if outlet is None:
                continue
            outlet.set_enabled(not settings.disabled and settings.quality != pm.OFF)
            quality = settings.quality if settings.quality != pm.OFF else pm.HIGH
            if settings.width:
                track = self._track_info(sid)
                quality = quality_for_width(list(track.layers) if track is not None else [], settings.width)
            outlet.set_quality(quality)

    def _track_info(self, track_sid: str) -> pm.TrackInfo | None:
        """The track ``track_sid`` another participant of the room announced, if any."""
        room = self._registry.room(self._participant.room)
        for participant in room.participants.values() if room else ():
            for track in participant.info.tracks if participant is not self._participant else ():
                if track.sid == track_sid:
                    return track
        return None

    def close(self) -> None:
        """Send nothing more: every outlet ends."""
        self._closed = True
        for outlet in self._outlets.values():
            outlet.source.drop(outlet)
        self._outlets.clear()
