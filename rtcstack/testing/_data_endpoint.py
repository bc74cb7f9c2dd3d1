"""One session's side of data: the packets it publishes (`DataRelay`), and its data tracks (see `_data_tracks` for
how LiveKit carries them): its publications and the handles of its subscriptions, kept in the room registry's
`DataTrackHub`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from google.protobuf.message import DecodeError
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from ._data import CHANNEL_KINDS, ReliableSequence, forwarded, stamp
from ._data_tracks import LABEL, REQUESTS, PublishRefused, check_publish
from ._rooms import Participant, RoomRegistry

__all__ = ["DataRelay", "DataTrackEndpoint"]

logger = logging.getLogger("rtcstack.testing")


class DataTrackEndpoint:
    """One session's side of data tracks: what it publishes and what it subscribes to."""

    def __init__(
        self,
        participant: Participant,
        registry: RoomRegistry,
        send: Callable[[pr.SignalResponse], None],
        send_frame: Callable[[bytes], None],
    ) -> None:
        self._participant = participant
        self._registry = registry
        self._send = send
        self._send_frame = send_frame
        self._handles: dict[str, int] = {}
        self._last_handle = 0

    @staticmethod
    def handles(kind: str | None) -> bool:
        """Whether a SignalRequest of this kind is a data track request."""
        return kind in REQUESTS

    def handle(self, request: pr.SignalRequest) -> None:
        kind = request.WhichOneof("message")
        if kind == "publish_data_track_request":
            self._publish(request.publish_data_track_request)
        elif kind == "unpublish_data_track_request":
            self._unpublish(request.unpublish_data_track_request)
        elif kind == "update_data_subscription":
            self._update_subscription(request.update_data_subscription)

    def received(self, frame: bytes) -> None:
        """A frame the client sent on its ``_data_track`` channel."""
        self._registry.data_tracks.forward(self._participant.sid, frame)

    def send_data_track_frame(self, frame: bytes) -> None:
        self._send_frame(frame)

    def data_track_gone(self, track_sid: str) -> None:
        if self._handles.pop(track_sid, None) is not None:
            self._send_handles()

    def close(self) -> None:
        """The session ended: its subscriptions and its tracks end with it."""
        hub = self._registry.data_tracks
        for track_sid in self._handles:
            hub.unsubscribe(track_sid, self)
        self._handles.clear()
        for info in list(self._participant.info.data_tracks):
            hub.remove(info.sid)

    def _publish(self, request: pr.PublishDataTrackRequest) -> None:
        try:
            check_publish(request, self._participant.info)
        except PublishRefused as refused:
            logger.info("%s: refused to publish data track %r: %s", self._participant.identity, request.name, refused)
            response = pr.RequestResponse(reason=refused.reason, message=refused.message)
            response.publish_data_track.CopyFrom(request)
            self._send(pr.SignalResponse(request_response=response))
            return
        info = self._registry.publish_data_track(self._participant, request)
        self._send(pr.SignalResponse(publish_data_track_response=pr.PublishDataTrackResponse(info=info)))

    def _unpublish(self, request: pr.UnpublishDataTrackRequest) -> None:
        info = self._registry.unpublish_data_track(self._participant, request.pub_handle)
        if info is None:
            response = pr.RequestResponse(reason=pr.RequestResponse.NOT_FOUND)
            response.unpublish_data_track.CopyFrom(request)
            self._send(pr.SignalResponse(request_response=response))
            return
        self._send(pr.SignalResponse(unpublish_data_track_response=pr.UnpublishDataTrackResponse(info=info)))

    def _update_subscription(self, request: pr.UpdateDataSubscription) -> None:
        hub = self._registry.data_tracks
        for update in request.updates:
            if not update.subscribe:
                if self._handles.pop(update.track_sid, None) is not None:
                    hub.unsubscribe(update.track_sid, self)
            elif update.track_sid not in self._handles and hub.published(update.track_sid) is not None:
                self._last_handle = self._last_handle % 0xFFFF + 1
                self._handles[update.track_sid] = self._last_handle
                hub.subscribe(update.track_sid, self, self._last_handle)
        self._send_handles()

    def _send_handles(self) -> None:
        hub = self._registry.data_tracks
        handles = {}
        for track_sid, handle in self._handles.items():
            published = hub.published(track_sid)
            if published is not None:
                handles[handle] = published
        self._send(pr.SignalResponse(data_track_subscriber_handles=pr.DataTrackSubscriberHandles(sub_handles=handles)))


class DataRelay:
    """One session's data channels in: a packet the client publishes is stamped as LiveKit does and passed on to
    the room (reliable resends dropped by ``sequence``); data-track frames go to its `DataTrackEndpoint`."""

    def __init__(self, participant: Participant, registry: RoomRegistry, tracks: DataTrackEndpoint) -> None:
        self._participant = participant
        self._registry = registry
        self.tracks = tracks
        self.sequence = ReliableSequence()

    def received(self, label: str, raw: bytes) -> None:
        """A packet the client published on data channel ``label``."""
        if label == LABEL:
            self.tracks.received(raw)
            return
        kind = CHANNEL_KINDS.get(label)
        sender = self._participant.info
        if kind is None or not sender.permission.can_publish_data:
            return
        try:
            packet = pm.DataPacket.FromString(raw)
        except DecodeError:
            logger.info("%s: dropped a data packet that is not a DataPacket", sender.identity)
            return
        if not self.sequence.fresh(packet, kind):
            return
        stamp(packet, kind, sender)
        if forwarded(packet, sender):
            self._registry.send_data(self._participant.room, packet, sender=self._participant)
        elif packet.WhichOneof("value") == "metrics":
            self._registry.send_metrics(self._participant.room, packet)
