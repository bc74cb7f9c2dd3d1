"""Data tracks on the loopback server, carried as LiveKit carries them.

A client publishes a data track with PublishDataTrackRequest (a 16-bit handle of its choosing and a name); the server
gives it a ``DTR_`` sid, answers PublishDataTrackResponse and lists it in the participant's ``data_tracks``, so the
room sees it. A subscriber asks with UpdateDataSubscription; the server picks a handle of its own for each of the
subscriber's subscriptions and sends the whole map in DataTrackSubscriberHandles after every change. Frames travel
on the ``_data_track`` data channel with a 12-byte header whose bytes 2-3 are the handle: the server rewrites the
publisher's handle into each subscriber's and forwards the rest untouched (so encrypted frames pass).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final, Protocol

from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

__all__ = ["LABEL", "REQUESTS", "DataTrackHub", "PublishRefused", "check_publish", "with_handle"]

logger = logging.getLogger("rtcstack.testing")

LABEL: Final = "_data_track"
"""The data channel that carries data track frames."""

_HEADER: Final = 12
_MAX_NAME: Final = 256
REQUESTS: Final = ("publish_data_track_request", "unpublish_data_track_request", "update_data_subscription")


class PublishRefused(Exception):
    """A PublishDataTrackRequest LiveKit refuses, with the RequestResponse reason it gives."""

    def __init__(self, reason: pr.RequestResponse.Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_publish(request: pr.PublishDataTrackRequest, publisher: pm.ParticipantInfo) -> None:
    """Raise `PublishRefused` where LiveKit refuses the request: no data permission, bad handle or name, duplicate."""
    if not publisher.permission.can_publish_data:
        raise PublishRefused(pr.RequestResponse.NOT_ALLOWED, "does not have permission to publish data")
    if not 0 < request.pub_handle <= 0xFFFF:
        raise PublishRefused(pr.RequestResponse.INVALID_HANDLE, "handle should be > 0 AND < 65536")
    if not 0 < len(request.name) <= _MAX_NAME:
        raise PublishRefused(
            pr.RequestResponse.INVALID_NAME, "name should not be empty and should not exceed 256 characters"
        )
    for existing in publisher.data_tracks:
        if existing.pub_handle == request.pub_handle:
            raise PublishRefused(pr.RequestResponse.DUPLICATE_HANDLE, "a data track with same handle already exists")
        if existing.name == request.name:
            raise PublishRefused(pr.RequestResponse.DUPLICATE_NAME, "a data track with same name already exists")


def handle_of(frame: bytes) -> int | None:
    """The track handle in a data track frame's header; None if the frame is shorter than a header."""
    return int.from_bytes(frame[2:4], "big") if len(frame) >= _HEADER else None


def with_handle(frame: bytes, handle: int) -> bytes:
    """``frame`` with its header's handle replaced (the frame is known to hold a header)."""
    return frame[:2] + handle.to_bytes(2, "big") + frame[4:]


class Subscriber(Protocol):
    """A session that subscribes to data tracks."""

    def send_data_track_frame(self, frame: bytes) -> None:
        """Send one frame (its handle already the subscriber's) on the client's ``_data_track`` channel."""

    def data_track_gone(self, track_sid: str) -> None:
        """The track was unpublished (or its publisher left): drop the subscription."""


@dataclass(eq=False)
class _Track:
    publisher: pr.DataTrackSubscriberHandles.PublishedDataTrack
    pub_handle: int
    subscribers: dict[Subscriber, int] = field(default_factory=dict)


class DataTrackHub:
    """Every published data track of a server and its subscribers, with the handle each subscriber knows it by."""

    def __init__(self) -> None:
        self._tracks: dict[str, _Track] = {}
        self._by_handle: dict[tuple[str, int], str] = {}

    def add(self, publisher: pm.ParticipantInfo, info: pm.DataTrackInfo) -> None:
        published = pr.DataTrackSubscriberHandles.PublishedDataTrack(
            publisher_identity=publisher.identity, publisher_sid=publisher.sid, track_sid=info.sid
        )
        self._tracks[info.sid] = _Track(published, info.pub_handle)
        self._by_handle[(publisher.sid, info.pub_handle)] = info.sid

    def remove(self, track_sid: str) -> None:
        """Forget a track; each of its subscribers is told it is gone."""
        track = self._tracks.pop(track_sid, None)
        if track is None:
            return
        del self._by_handle[(track.publisher.publisher_sid, track.pub_handle)]
        for subscriber in list(track.subscribers):
            subscriber.data_track_gone(track_sid)

    def published(self, track_sid: str) -> pr.DataTrackSubscriberHandles.PublishedDataTrack | None:
        track = self._tracks.get(track_sid)
        return track.publisher if track is not None else None

    def subscribe(self, track_sid: str, subscriber: Subscriber, handle: int) -> None:
        self._tracks[track_sid].subscribers[subscriber] = handle

    def unsubscribe(self, track_sid: str, subscriber: Subscriber) -> None:
        track = self._tracks.get(track_sid)
        if track is not None:
            track.subscribers.pop(subscriber, None)

    def forward(self, publisher_sid: str, frame: bytes) -> None:
        """Pass a frame the publisher sent to the subscribers of the track its handle names."""
        handle = handle_of(frame)
        track_sid = self._by_handle.get((publisher_sid, handle)) if handle is not None else None
        if track_sid is None:
            logger.debug("dropped a data track frame with no published track behind it")
            return
        for subscriber, sub_handle in list(self._tracks[track_sid].subscribers.items()):
            subscriber.send_data_track_frame(with_handle(frame, sub_handle))
