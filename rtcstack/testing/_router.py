"""Who receives which published track: the subscription bookkeeping of the loopback SFU.

A `Source` is registered when its publisher's media arrives; subscribers (sessions, through the `Subscriber`
protocol) are offered it by auto-subscribe or by request, and lose it on unsubscribe, unpublish or when the
publisher leaves. No media passes through here; outlets and peer connections are the subscribers' business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from livekit.protocol import rtc as pr

from ._forward import ReceivedTrack, Source, StallMode
from ._rooms import Participant, RoomRegistry

__all__ = ["MediaRouter", "Subscriber", "subscriber_of"]

logger = logging.getLogger("rtcstack.testing")


@runtime_checkable
class Subscriber(Protocol):
    """A participant's media sink (a session's downlink)."""

    def wants(self, track_sid: str) -> bool:
        """Whether ``track_sid`` is to be sent to it once published (it auto-subscribes, or it asked for it)."""

    def attach(self, source: Source) -> None:
        """Start sending ``source`` to the client (idempotent)."""

    def detach(self, track_sid: str) -> None:
        """Stop sending the track ``track_sid`` to the client (nothing if it was not sent)."""

    def receives(self, track_sids: set[str]) -> bool:
        """Whether the client is sent one of these tracks."""


def subscriber_of(participant: Participant) -> Subscriber | None:
    """The media sink of ``participant``'s session (its ``downlink``); None for a sink that takes no media."""
    downlink: object = getattr(participant.sink, "downlink", None)
    return downlink if isinstance(downlink, Subscriber) else None


class MediaRouter:
    """All published sources of one server, by track sid, with their publishers."""

    def __init__(self, registry: RoomRegistry) -> None:
        self._registry = registry
        self._sources: dict[str, tuple[Participant, Source]] = {}
        self._subscribed: set[str] = set()
        self._stalls: dict[tuple[str, str], StallMode] = {}
        """(identity, source name) -> how its tracks stall, for those published now and later."""
        self.on_frame: Callable[[], None] | None = None
        """Called after each frame any published source receives (the server's waits)."""

    def source(self, track_sid: str) -> Source | None:
        entry = self._sources.get(track_sid)
        return entry[1] if entry else None

    def publish(self, publisher: Participant, source: Source) -> None:
        """Register ``source`` and offer it to everyone in the room who auto-subscribes or asked for it."""
        self._sources[source.track_sid] = (publisher, source)
        source.on_frame = self.on_frame
        stall = self._stalls.get((publisher.identity, source.source))
        if stall is not None:
            source.stall(stall)
        logger.debug("%s publishes %r", publisher.identity, source)
        for subscriber in self._subscribers(publisher.room, exclude=publisher):
            if subscriber.wants(source.track_sid):
                subscriber.attach(source)

    def stall(self, identity: str, sources: Iterable[str], mode: StallMode) -> None:
        """Stall the tracks of ``identity`` from these sources (by name), now and when published later."""
        names = set(sources)
        self._stalls.update(((identity, name), mode) for name in names)
        for owner, source in self._sources.values():
            if owner.identity == identity and source.source in names:
                source.stall(mode)

    def resume(self, identity: str, sources: Iterable[str]) -> None:
        """Forward the tracks of ``identity`` from these sources again."""
        names = set(sources)
        for name in names:
            self._stalls.pop((identity, name), None)
        for owner, source in self._sources.values():
            if owner.identity == identity and source.source in names:
                source.resume()

    def subscribed(self, track_sid: str) -> None:
        """Someone subscribed to ``track_sid``: the first time, its publisher is told (``local_track_subscribed``)."""
        entry = self._sources.get(track_sid)
        if entry is not None and track_sid not in self._subscribed:
            self._subscribed.add(track_sid)
            entry[0].send(pr.SignalResponse(track_subscribed=pr.TrackSubscribed(track_sid=track_sid)))

    def unpublish(self, track_sid: str) -> None:
        """Withdraw a source from its subscribers and end it (nothing if there is no such source)."""
        entry = self._sources.pop(track_sid, None)
        self._subscribed.discard(track_sid)
        if entry is None:
            return
        publisher, source = entry
        logger.debug("%s unpublished %r", publisher.identity, source)
        for subscriber in self._subscribers(publisher.room, exclude=publisher):
            subscriber.detach(track_sid)
        source.close()

    def left(self, participant: Participant) -> None:
        """``participant`` left its room: its tracks go with it."""
        for track_sid in [sid for sid, (owner, _) in self._sources.items() if owner is participant]:
            self.unpublish(track_sid)

    def available(self, subscriber: Participant) -> list[Source]:
        """The sources of the others in ``subscriber``'s room."""
        return [
            source
            for owner, source in self._sources.values()
            if owner.room == subscriber.room and owner is not subscriber and self._present(owner)
        ]

    def received(self, participant: Participant) -> list[ReceivedTrack]:
        """What the server receives from each track ``participant`` publishes, in publishing order."""
        return [source.stats() for owner, source in self._sources.values() if owner is participant]

    def _present(self, participant: Participant) -> bool:
        return self._registry.participant(participant.room, participant.identity) is participant

    def _subscribers(self, room: str, exclude: Participant) -> Iterable[Subscriber]:
        found = self._registry.room(room)
        if found is None:
            return []
        subscribers: list[Subscriber] = []
        for participant in found.participants.values():
            downlink = subscriber_of(participant)
            if participant is not exclude and downlink is not None:
                subscribers.append(downlink)
        return subscribers
