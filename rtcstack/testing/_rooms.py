"""Room and participant bookkeeping of the loopback server, with the fan-out the real server does.

No sockets here: a participant reaches its client through a `Sink` (a signal session, or ``None`` for a synthetic
participant). Every change goes through one `RoomRegistry` method, which bumps the participant's version and sends
the `ParticipantUpdate` to whoever the real server would send it to. The signal layer and the Twirp RoomService
both drive the model through these methods.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from ._data import NonceFilter, addressed_to
from ._data_tracks import DataTrackHub

__all__ = ["Participant", "Room", "RoomRegistry", "Sink", "new_sid"]

logger = logging.getLogger("rtcstack.testing")


def new_sid(prefix: str) -> str:
    """A LiveKit-style id: ``RM_``, ``PA_``, ``TR_`` followed by 12 random characters."""
    return f"{prefix}_{secrets.token_hex(6)}"


class Sink(Protocol):
    """Where a participant's signal responses go (its live session)."""

    def send(self, message: pr.SignalResponse) -> None:
        """Queue one message for the client, in order; dropped if the client is gone."""

    def close(self, leave: pr.LeaveRequest | None) -> None:
        """Send ``leave`` (if any) after what is queued, then close the signal socket and the media."""

    def send_data(self, packet: pm.DataPacket) -> None:
        """Deliver a DataPacket on the client's data channel."""


@dataclass(eq=False)
class Participant:
    """One identity in one room. ``sink`` is None for synthetic participants (no client behind them)."""

    room: str
    info: pm.ParticipantInfo
    sink: Sink | None = None

    @property
    def identity(self) -> str:
        return self.info.identity

    @property
    def sid(self) -> str:
        return self.info.sid

    def send(self, message: pr.SignalResponse) -> None:
        if self.sink is not None:
            self.sink.send(message)


@dataclass(eq=False)
class Room:
    """A room and its participants, in join order."""

    info: pm.Room
    participants: dict[str, Participant] = field(default_factory=dict)
    data_nonces: NonceFilter = field(default_factory=NonceFilter)
    batched: dict[str, pm.ParticipantInfo] = field(default_factory=dict)
    """Updates about non-publishers waiting for the next flush, by identity (the latest one of each)."""
    flush: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        return self.info.name

    def snapshot(self) -> pm.Room:
        """The Room message with live counters."""
        info = pm.Room()
        info.CopyFrom(self.info)
        info.num_participants = len(self.participants)
        info.num_publishers = sum(1 for p in self.participants.values() if p.info.tracks)
        return info


class RoomRegistry:
    """All rooms of one server. Rooms open on the first join and close when the last participant leaves."""

    def __init__(self, update_interval: float = 0.0) -> None:
        self._rooms: dict[str, Room] = {}
        self._update_interval = update_interval
        """As LiveKit (3 s): how long a joined / active / left update about a non-publisher waits to be sent, batched
        with others and superseded by a later one about the same participant; 0 sends each at once."""
        self._versions = itertools.count(1)
        self.departures: list[Callable[[Participant], None]] = []
        """Called with each participant that leaves its room, however it leaves (the media router's hook)."""
        self.arrivals: list[Callable[[Participant], None]] = []
        """Called with each participant that joins a room (the server's waits)."""
        self.data_tracks = DataTrackHub()

    # -- queries ------------------------------------------------------------------------------------------------

    def rooms(self) -> list[Room]:
        """Open rooms, oldest first."""
        return list(self._rooms.values())

    def room(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def participant(self, room: str, identity: str) -> Participant | None:
        found = self._rooms.get(room)
        return found.participants.get(identity) if found else None

    def find(self, identity: str, room: str | None = None) -> Participant:
        """The participant with this identity (in ``room`` if given); LookupError if there is none."""
        for candidate in self._rooms.values():
            if room is not None and candidate.name != room:
                continue
            found = candidate.participants.get(identity)
            if found is not None:
                return found
        where = f" in room {room!r}" if room is not None else ""
        raise LookupError(f"no participant {identity!r}{where}")

    def others(self, participant: Participant) -> list[pm.ParticipantInfo]:
        """Everyone else in the participant's room, for a JoinResponse."""
        room = self._rooms.get(participant.room)
        if room is None:
            return []
        return [p.info for p in room.participants.values() if p is not participant]

    # -- membership ---------------------------------------------------------------------------------------------

    def join(self, participant: Participant) -> Room:
        """Add a participant (its state as set in its info), replacing one with the same identity; announce it.

        The replaced session gets leave(DUPLICATE_IDENTITY) and is closed; the room then sees it leave and the new
        one join, as with the real server.
        """
        room, info = participant.room, participant.info
        target = self._rooms.get(room)
        if target is None:
            now = time.time()
            target = Room(
                pm.Room(
                    sid=new_sid("RM"),
                    name=room,
                    creation_time=int(now),
                    creation_time_ms=int(now * 1000),
                    empty_timeout=300,
                    departure_timeout=20,
                )
            )
            self._rooms[room] = target
            logger.debug("room %s opened", room)
        old = target.participants.get(info.identity)
        if old is not None:
            if old.sink is not None:
                old.sink.close(pr.LeaveRequest(reason=pm.DUPLICATE_IDENTITY, action=pr.LeaveRequest.DISCONNECT))
                old.sink = None
            self._detach(old, pm.DUPLICATE_IDENTITY)
        target.participants[info.identity] = participant
        logger.debug("%s joined %s as %s", info.identity, room, info.sid)
        self._announce(participant, include_self=False, batched=True)
        for arrived in self.arrivals:
            arrived(participant)
        return target

    def set_state(self, participant: Participant, state: pm.ParticipantInfo.State) -> None:
        """Move a participant to JOINED / ACTIVE and tell the room (ACTIVE is what fires participant_active)."""
        if participant.info.state == state or not self._present(participant):
            return
        participant.info.state = state
        self._announce(participant, include_self=True, batched=True)

    def remove(self, participant: Participant, reason: pm.DisconnectReason = pm.CLIENT_INITIATED) -> bool:
        """Take a participant out of its room (others see state DISCONNECTED); close the room if it empties.

        The participant's own session is not touched: callers that kick someone close its sink first.
        Returns False if it was not in the room any more.
        """
        if not self._present(participant):
            return False
        self._detach(participant, reason)
        room = self._rooms[participant.room]
        if not room.participants:
            self._close(room)
        return True

    def kick(self, participant: Participant, leave: pr.LeaveRequest) -> None:
        """Server-initiated leave: send ``leave``, close the session, remove the participant.

        As with LiveKit, a client whose socket was down when it was sent does not learn it: its resume finds no
        session and is told to reconnect in full.
        """
        if participant.sink is not None:
            participant.sink.close(leave)
            participant.sink = None
        self.remove(participant, leave.reason)

    def delete_room(self, name: str, reason: pm.DisconnectReason = pm.ROOM_DELETED) -> bool:
        """Kick everyone with ``reason`` and forget the room. False if there was no such room."""
        room = self._rooms.get(name)
        if room is None:
            return False
        leave = pr.LeaveRequest(reason=reason, action=pr.LeaveRequest.DISCONNECT)
        for participant in list(room.participants.values()):
            self.kick(participant, leave)
        self._close(room)
        return True

    # -- participant changes ------------------------------------------------------------------------------------

    def update(
        self,
        participant: Participant,
        *,
        name: str | None = None,
        metadata: str | None = None,
        attributes: Mapping[str, str] | None = None,
        permission: pm.ParticipantPermission | None = None,
    ) -> None:
        """Change name / metadata / attributes (an empty value deletes the key) / permission; tell everyone."""
        info = participant.info
        if name is not None:
            info.name = name
        if metadata is not None:
            info.metadata = metadata
        if attributes is not None:
            for key, value in attributes.items():
                if value:
                    info.attributes[key] = value
                else:
                    info.attributes.pop(key, None)
        if permission is not None:
            info.permission.CopyFrom(permission)
        self._announce(participant, include_self=True)

    def publish_track(self, participant: Participant, track: pm.TrackInfo) -> None:
        """Add a track (its sid already set) to the participant and announce it."""
        participant.info.tracks.append(track)
        participant.info.is_publisher = True
        self._announce(participant, include_self=False)

    def set_track_muted(self, participant: Participant, track_sid: str, muted: bool) -> bool:
        """Mute / unmute a published track and announce it. False if the participant has no such track."""
        for track in participant.info.tracks:
            if track.sid == track_sid:
                if track.muted != muted:
                    track.muted = muted
                    self._announce(participant, include_self=False)
                return True
        return False

    def unpublish_track(self, participant: Participant, track_sid: str) -> bool:
        """Remove a published track and announce it. False if the participant has no such track."""
        kept = [t for t in participant.info.tracks if t.sid != track_sid]
        if len(kept) == len(participant.info.tracks):
            return False
        del participant.info.tracks[:]
        participant.info.tracks.extend(kept)
        participant.info.is_publisher = bool(kept)
        self._announce(participant, include_self=False)
        return True

    def set_quality(self, participant: Participant, quality: pm.ConnectionQuality, score: float) -> None:
        """Send a ConnectionQualityUpdate about the participant to everyone in its room (itself included)."""
        info = pr.ConnectionQualityInfo(participant_sid=participant.sid, quality=quality, score=score)
        update = pr.SignalResponse(connection_quality=pr.ConnectionQualityUpdate(updates=[info]))
        self.broadcast(participant.room, update)

    # -- fan-out ------------------------------------------------------------------------------------------------

    def broadcast(self, room: str, message: pr.SignalResponse, exclude: Iterable[Participant] = ()) -> None:
        """Send ``message`` to everyone in ``room`` but ``exclude``."""
        target = self._rooms.get(room)
        if target is None:
            return
        skip = set(map(id, exclude))
        for participant in list(target.participants.values()):
            if id(participant) not in skip:
                participant.send(message)

    def send_data(self, room: str, packet: pm.DataPacket, sender: Participant | None = None) -> None:
        """Deliver ``packet`` to everyone in ``room`` but ``sender``, or only to its destination sids/identities.

        A user packet whose nonce the room saw lately is dropped, as LiveKit does.
        """
        target = self._rooms.get(room)
        if target is None or target.data_nonces.duplicate(packet):
            return
        for participant in list(target.participants.values()):
            if participant is sender or participant.sink is None:
                continue
            if addressed_to(packet, participant.sid, participant.identity):
                participant.sink.send_data(packet)

    def send_metrics(self, room: str, packet: pm.DataPacket) -> None:
        """Deliver a metrics packet to everyone in ``room`` allowed to subscribe to metrics, its sender included."""
        target = self._rooms.get(room)
        if target is None:
            return
        for participant in list(target.participants.values()):
            if participant.sink is not None and participant.info.permission.can_subscribe_metrics:
                participant.sink.send_data(packet)

    def publish_data_track(self, participant: Participant, request: pr.PublishDataTrackRequest) -> pm.DataTrackInfo:
        """Give a data track (the request already checked) its sid, add it to the participant and announce it."""
        info = pm.DataTrackInfo(
            pub_handle=request.pub_handle,
            sid=new_sid("DTR"),
            name=request.name,
            encryption=request.encryption,
            frame_encoding=request.frame_encoding if request.HasField("frame_encoding") else None,
            schema=request.schema if request.HasField("schema") else None,
        )
        participant.info.data_tracks.append(info)
        participant.info.is_publisher = True
        self.data_tracks.add(participant.info, info)
        self._announce(participant, include_self=False)
        return info

    def unpublish_data_track(self, participant: Participant, pub_handle: int) -> pm.DataTrackInfo | None:
        """Remove the participant's data track with this handle, end its subscriptions, announce; None if none."""
        for index, info in enumerate(participant.info.data_tracks):
            if info.pub_handle == pub_handle:
                removed = pm.DataTrackInfo()
                removed.CopyFrom(info)
                del participant.info.data_tracks[index]
                self.data_tracks.remove(removed.sid)
                self._announce(participant, include_self=False)
                return removed
        return None

    def _announce(self, participant: Participant, *, include_self: bool, batched: bool = False) -> None:
        """Tell the room about ``participant``. A ``batched`` update about a non-publisher waits for the next flush
        (`update_interval`), as LiveKit sends state changes; any other update goes at once, with what was waiting."""
        info = participant.info
        info.version = next(self._versions)
        room = self._rooms.get(participant.room)
        if room is None:
            return
        if batched and not info.is_publisher and self._update_interval > 0:
            waiting = pm.ParticipantInfo()
            waiting.CopyFrom(info)
            room.batched[info.identity] = waiting
            if room.flush is None:
                room.flush = asyncio.get_running_loop().call_later(self._update_interval, self._flush, room)
            return
        room.batched.pop(info.identity, None)
        update = pr.SignalResponse(update=pr.ParticipantUpdate(participants=[info]))
        self.broadcast(participant.room, update, exclude=() if include_self else (participant,))

    def _close(self, room: Room) -> None:
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
            logger.debug("room %s closed", room.name)
        if room.flush is not None:
            room.flush.cancel()
            room.flush = None

    def _flush(self, room: Room) -> None:
        room.flush = None
        updates, room.batched = list(room.batched.values()), {}
        if updates and self._rooms.get(room.name) is room:
            self.broadcast(room.name, pr.SignalResponse(update=pr.ParticipantUpdate(participants=updates)))

    def _detach(self, participant: Participant, reason: pm.DisconnectReason) -> None:
        room = self._rooms[participant.room]
        del room.participants[participant.identity]
        participant.info.state = pm.ParticipantInfo.DISCONNECTED
        participant.info.disconnect_reason = reason
        logger.debug("%s left %s (%s)", participant.identity, room.name, pm.DisconnectReason.Name(reason))
        self._announce(participant, include_self=False, batched=True)
        for departure in self.departures:
            departure(participant)

    def _present(self, participant: Participant) -> bool:
        room = self._rooms.get(participant.room)
        return room is not None and room.participants.get(participant.identity) is participant
