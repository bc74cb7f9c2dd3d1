"""`Translator`: the SDK's Room events in, the call's snapshots and outputs out.

Every callback the call binds to a Room is here (`handlers()`). Each turns the SDK's objects into our snapshots
(`Participant`, `TrackInfo`), keeps the roster and the media books current, and hands the pump what follows: machine
inputs (`feed`) and events to emit (`apply`). The reconciliation around a reconnect lives here too, because it is
about what the SDK reports while the call is away: a full restart reports everyone and every track gone, just
before the call shows as reconnecting; leaves with no reason wait a moment in case that is what they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from livekit import rtc

from ._health import CallHealth, HealthOutput, MediaRestored, TrackResumed, TrackStalled
from ._keeper import TokenKeeper
from ._machine import Input, Output, SdkConnected, SdkDisconnected, SdkReconnecting
from ._media import CallMedia
from ._models import Participant, TrackInfo, participant_from_sdk, track_info_from_sdk
from ._room import RoomSlot
from ._roster import Roster
from ._tasks import Later
from ._vocab import quality_from_sdk, reason_from_sdk

__all__ = ["UNEXPLAINED_LEAVE_GRACE", "Translator"]

UNEXPLAINED_LEAVE_GRACE = 0.25
"""Seconds a leave with no disconnect reason (and a track's departure) waits before it is applied."""
_LEFT = "left"
"""The `what` of a participant's waiting leave in `Later` (their track departures are ``(event, sid)``)."""


def _departure(what: Hashable) -> bool:
    return what != _LEFT


class Translator:
    """The call's view of its Room: the roster, the local participant, who speaks, and the media books in `media`.

    `feed` takes machine inputs, `apply` the roster's and the books' outputs, `emit` events the pump needs not see;
    `rejoin_grace` is how long someone not back after a full reconnect has to return.
    """

    def __init__(
        self,
        slot: RoomSlot,
        media: CallMedia,
        keeper: TokenKeeper,
        health: CallHealth,
        *,
        rejoin_grace: float,
        feed: Callable[[Input], None],
        apply: Callable[[Iterable[Output]], None],
        emit: Callable[..., None],
    ) -> None:
        self._slot = slot
        self._media = media
        self._keeper = keeper
        self._health = health
        self._rejoin_grace = rejoin_grace
        self._feed = feed
        self._apply = apply
        self._emit = emit
        self.roster = Roster()
        self.later = Later()
        self._local: Participant | None = None
        self._speaking: frozenset[str] = frozenset()
        self._seen_leaving: set[str] = set()

    @property
    def local(self) -> Participant | None:
        """The local participant's latest snapshot (None before the first connect)."""
        return self._local

    def handlers(self) -> dict[str, Callable[..., None]]:
        """The callback of each SDK Room event the call listens to."""
        return {
            "connection_state_changed": self._on_connection_state,
            "disconnected": self._on_disconnected,
            "participant_connected": self._on_participant_connected,
            "participant_disconnected": self._on_participant_disconnected,
            "participant_active": self._on_participant_changed,
            "participant_metadata_changed": self._on_participant_changed,
            "participant_name_changed": self._on_participant_changed,
            "participant_attributes_changed": self._on_attributes_changed,
            "connection_quality_changed": self._on_quality,
            "track_published": self._on_track_published,
            "track_unpublished": self._on_track_unpublished,
            "track_subscribed": self._on_track_subscribed,
            "track_unsubscribed": self._on_track_unsubscribed,
            "track_subscription_failed": self._on_track_subscription_failed,
            "local_track_published": self._on_local_track_published,
            "local_track_unpublished": self._on_local_track_unpublished,
            "local_track_republished": self._on_local_track_republished,
            "track_muted": self._on_track_muted,
            "track_unmuted": self._on_track_unmuted,
            "active_speakers_changed": self._on_active_speakers,
            "data_received": self._on_data,
            "token_refreshed": self._on_server_token,
        }

    # -- snapshots ---------------------------------------------------------------------------------------------

    def present(self) -> list[Participant]:
        """Snapshots of the remote participants in the current Room now."""
        room = self._slot.current
        return [] if room is None else [self._snapshot(p, is_local=False) for p in room.remote_participants.values()]

    def _snapshot(self, participant: Any, *, is_local: bool) -> Participant:
        return participant_from_sdk(
            participant,
            is_local=is_local,
            quality=quality_from_sdk(participant.connection_quality),
            is_speaking=participant.identity in self._speaking,
            media=self._health.media,
        )

    def _info(self, publication: Any) -> TrackInfo:
        return track_info_from_sdk(publication, self._health.media)

    def _refresh_local(self) -> None:
        room = self._slot.current
        if room is not None:
            self._local = self._snapshot(room.local_participant, is_local=True)

    def _store(self, participant: Any) -> Participant:
        """A fresh snapshot of `participant`, stored where it belongs (local, or the roster if known)."""
        is_local = self._local is not None and participant.identity == self._local.identity
        snap = self._snapshot(participant, is_local=is_local)
        if is_local:
            self._local = snap
        else:
            self.roster.replace(snap)
        return snap

    def _local_or_remote(self, identity: str) -> Participant | None:
        if self._local is not None and identity == self._local.identity:
            return self._local
        return self.roster.get(identity)

    # -- the call's life (the pump calls these on the machine's outputs) ---------------------------------------

    def session_started(self) -> None:
        """Connected: the participants already in the room are the roster, without events."""
        self._refresh_local()
        self.roster.seed(self.present())

    def episode_started(self) -> None:
        """A reconnect episode began: hold the roster and the subscriptions, forget the departures reported."""
        self.roster.hold()
        self._media.subscriptions.hold()
        self.later.drop(_departure)
        self._seen_leaving.clear()
        self._health.episode_started()

    def episode_ended(self) -> None:
        """The call is back: apply the real changes. Participants not in the Room and not seen leaving get
        `rejoin_grace` to return. Track departures the SDK reported while away are moot: what the Room has now is
        compared with what the app was told."""
        self.later.drop(_departure)
        self._refresh_local()
        current = self.present()
        present = {p.identity for p in current}
        absent = [p.identity for p in self.roster.snapshot() if p.identity not in present]
        keep = [i for i in absent if i not in self._seen_leaving] if self._rejoin_grace > 0 else []
        self._apply(self.roster.release(current, keep))
        for identity in keep:
            self._leave_later(identity, self._rejoin_grace)
        published = [(p, track) for p in self.roster.snapshot() for track in p.tracks]
        self._apply(self._media.subscriptions.release(published))
        local = [entry.sids[-1] for entry in self._media.publications.kept()]  # published again on a fresh Room
        # A subscription that stays (its publication is in the Room) stays watched, even before the fresh
        # connection has subscribed it: media_restored waits for it, and it stalls if it never comes.
        told = set(self._media.subscriptions.told())
        remote = [track.sid for p, track in published if (p.identity, track.sid) in told and not track.muted]
        self._health.keep_only(local + remote)  # what went during the episode (its departures were not applied)
        self._health.episode_ended()

    def left(self, participant: Participant) -> None:
        """`participant` left for real: what they sent ends, then `participant_left` is emitted."""
        self.later.flush(participant.identity, keep=lambda what: what == _LEFT)
        self._apply(self._media.subscriptions.left(participant))
        self._media.left(participant.identity)
        self._health.left(participant.identity)
        self._emit("participant_left", participant)

    def lost(self, info: TrackInfo) -> None:
        """A kept local track could not be published again after a rejoin: told as unpublished."""
        self._health.unwatch(info.sid)
        room = self._slot.current
        if room is not None:
            self._emit("track_unpublished", self._store(room.local_participant), info)

    def ended(self) -> None:
        """The call ended: nothing waits, nobody is left."""
        self.later.drop()
        self.roster.clear()
        self._health.end()

    def told_health(self, outputs: list[HealthOutput]) -> None:
        """Emit what the media-health watch found, with fresh snapshots of the track and its participant."""
        for out in outputs:
            if isinstance(out, MediaRestored):
                self._emit("media_restored", out.after)
                continue
            found = self._publication(out.identity, out.sid)
            if found is None:  # gone from the Room in the meantime
                continue
            participant, info = found
            if isinstance(out, TrackStalled):
                self._emit("track_stalled", participant, info, out.reason)
            elif isinstance(out, TrackResumed):
                self._emit("track_resumed", participant, info, out.stalled_for)

    def refresh(self, identities: Iterable[str]) -> None:
        """Take fresh snapshots of these participants (their tracks' media changed, or who speaks), with no event."""
        for identity in identities:
            sdk = self._sdk_participant(identity)
            if sdk is not None:
                self._store(sdk)

    def _sdk_participant(self, identity: str) -> Any:
        """The current Room's participant (local or remote) of `identity`, or None."""
        room = self._slot.current
        if room is None:
            return None
        local = room.local_participant
        return local if identity == local.identity else room.remote_participants.get(identity)

    def _publication(self, identity: str, sid: str) -> tuple[Participant, TrackInfo] | None:
        sdk = self._sdk_participant(identity)
        publication = None if sdk is None else sdk.track_publications.get(sid)
        if publication is None:
            return None
        return self._store(sdk), self._info(publication)

    def _watch(self, identity: str, publication: Any, track: Any) -> None:
        if track is not None and not publication.muted:
            video = publication.kind == rtc.TrackKind.KIND_VIDEO
            self._health.watch(publication.sid, identity, track, video=video)

    # -- Room callbacks ----------------------------------------------------------------------------------------

    def _on_connection_state(self, state: int) -> None:
        if state == rtc.ConnectionState.CONN_CONNECTED:
            self._feed(SdkConnected())
        elif state == rtc.ConnectionState.CONN_RECONNECTING:
            self._feed(SdkReconnecting(time.monotonic()))

    def _on_disconnected(self, sdk_reason: int) -> None:
        reason, transient = reason_from_sdk(sdk_reason)
        self._slot.retire()
        self._feed(SdkDisconnected(reason, transient, time.monotonic()))

    def _on_participant_connected(self, participant: Any) -> None:
        self._apply(self.roster.join(self._snapshot(participant, is_local=False)))

    def _on_participant_disconnected(self, participant: Any) -> None:
        # A full restart makes the SDK report everyone as gone, with no disconnect reason, just before RECONNECTING
        # (measured with livekit 1.2.1: the same loop iteration when idle, later under load). A leave the server gave
        # a reason for is real and applied at once; one without waits a moment, in case a reconnect begins.
        if participant.disconnect_reason and self.roster.held:
            self._seen_leaving.add(participant.identity)
        self._leave_later(participant.identity, 0.0 if participant.disconnect_reason else UNEXPLAINED_LEAVE_GRACE)

    def _leave_later(self, identity: str, delay: float) -> None:
        """In `delay` s, `identity` has left unless the call's Room has them again (or is another Room by then)."""
        room = self._slot.current

        def apply() -> None:
            if room is self._slot.current and room is not None and identity not in room.remote_participants:
                self._apply(self.roster.leave(identity))

        self.later.schedule((identity, _LEFT), delay, apply)

    def _on_participant_changed(self, participant: Any, *_: Any) -> None:
        snap = self._snapshot(participant, is_local=False)
        if self._local is not None and participant.identity == self._local.identity:
            self._local = self._snapshot(participant, is_local=True)
        else:
            self._apply(self.roster.update(snap))

    def _on_attributes_changed(self, _changed: Any, participant: Any) -> None:
        self._on_participant_changed(participant)

    def _on_quality(self, participant: Any, quality: int) -> None:
        if participant is not None:
            self._emit("connection_quality_changed", self._store(participant), quality_from_sdk(quality))

    def _on_track_published(self, publication: Any, participant: Any) -> None:
        snap = self._store(participant)
        if not self.roster.held:
            self._emit("track_published", snap, self._info(publication))

    def _on_track_unpublished(self, publication: Any, participant: Any) -> None:
        info = self._info(publication)

        def apply() -> None:
            if not self.roster.held:
                self._health.unwatch(info.sid)
            snap = self._store(participant)
            self._apply(self._media.subscriptions.unsubscribed(snap, info.sid))
            self._emit("track_unpublished", snap, info)

        self.later.schedule((participant.identity, ("unpublished", info.sid)), UNEXPLAINED_LEAVE_GRACE, apply)

    def _on_track_subscribed(self, track: Any, publication: Any, participant: Any) -> None:
        self._media.subscribed(participant.identity, track, publication)
        self._watch(participant.identity, publication, track)
        snap = self._store(participant)
        self._apply(self._media.subscriptions.subscribed(snap, self._info(publication)))

    def _on_track_unsubscribed(self, track: Any, publication: Any, participant: Any) -> None:
        self._media.unsubscribed(track)
        sid = publication.sid

        def apply() -> None:
            if not self.roster.held:
                self._health.unwatch(sid)
            self._apply(self._media.subscriptions.unsubscribed(self._store(participant), sid))

        self.later.schedule((participant.identity, ("unsubscribed", sid)), UNEXPLAINED_LEAVE_GRACE, apply)

    def _on_track_subscription_failed(self, participant: Any, track_sid: str, error: str) -> None:
        snap = self._store(participant)
        self._apply(self._media.subscriptions.unsubscribed(snap, track_sid))
        self._emit("track_subscription_failed", snap, track_sid, error)

    def _on_local_track_published(self, publication: Any, track: Any) -> None:
        room = self._slot.current
        if room is not None:
            entry = self._media.publications.published(publication, track)
            if len(entry.sids) > 1:  # published again on a rejoin's fresh Room: the same track goes on
                self._health.rename(entry.sids[-2], entry.sids[-1])
            self._watch(room.local_participant.identity, publication, track)
            self._emit("track_published", self._store(room.local_participant), self._info(publication))

    def _on_local_track_unpublished(self, publication: Any) -> None:
        room = self._slot.current
        if room is not None:
            info = self._info(publication)
            self._health.unwatch(info.sid)
            self._media.publications.remove(info.sid)
            self._emit("track_unpublished", self._store(room.local_participant), info)

    def _on_local_track_republished(self, publication: Any, previous_sid: str) -> None:
        # The SDK's own full restart published the track again, and the server gave it a new sid: told as after a
        # rejoin, so the app knows the sid it has now.
        self._media.publications.renamed(publication, previous_sid)
        self._health.rename(previous_sid, publication.sid)
        room = self._slot.current
        if room is not None:
            self._watch(room.local_participant.identity, publication, publication.track)
            self._emit("track_published", self._store(room.local_participant), self._info(publication))

    def _on_track_muted(self, participant: Any, publication: Any) -> None:
        self._health.unwatch(publication.sid)
        self._emit("track_muted", self._store(participant), self._info(publication))

    def _on_track_unmuted(self, participant: Any, publication: Any) -> None:
        self._watch(participant.identity, publication, publication.track)
        self._emit("track_unmuted", self._store(participant), self._info(publication))

    def _on_active_speakers(self, speakers: list[Any]) -> None:
        before = self._speaking
        self._speaking = frozenset(p.identity for p in speakers)
        self.refresh(before ^ self._speaking)
        snaps = [s for s in (self._local_or_remote(p.identity) for p in speakers) if s is not None]
        self._emit("active_speakers_changed", snaps)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        sender = None if packet.participant is None else self.roster.get(packet.participant.identity)
        reliable = packet.kind == rtc.DataPacketKind.KIND_RELIABLE
        self._emit("data_received", packet.data, sender, packet.topic or None, reliable)

    def _on_server_token(self) -> None:
        # the SDK keeps the pushed token on the Room; it has no public getter
        self._keeper.pushed(getattr(self._slot.current, "_token", None))
