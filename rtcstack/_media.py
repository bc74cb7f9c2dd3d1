"""Media that outlives a Room: the local publications a rejoin publishes again, the remote subscriptions the app was
told of, and the streams that follow a remote participant's track of one source (`_streams.MediaStream`).

`LocalPublications` and `Subscriptions` are plain bookkeeping (no I/O) that make no decisions about the call's
lifecycle. `CallMedia` keeps them for a call and does its media work on the Room of the moment: publish and unpublish,
follow, and publish again (or subscribe again) on a rejoin's fresh Room.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc
from livekit.rtc._proto.track_pb2 import AudioTrackFeature  # not re-exported by livekit.rtc
from livekit.rtc.participant import PublishTrackError, UnpublishTrackError

from ._errors import ConfigError, PublishError
from ._machine import Emit
from ._models import Participant, TrackInfo, track_info_from_sdk
from ._room import RoomLike, RoomSlot
from ._streams import MediaStream
from ._tasks import Tasks
from ._vocab import AUDIO_SOURCES, TRACK_SOURCE_TO_SDK, VIDEO_SOURCES

__all__ = [
    "CallMedia",
    "LocalPublications",
    "Published",
    "Subscriptions",
    "check_positive",
    "options_from_publication",
    "stream_source",
]

logger = logging.getLogger("rtcstack")

_WITHDRAW_BOUND = 10.0
"""Seconds the unpublish of a cancelled publish may take before it is given up (with a warning)."""
_DEFAULT_PUBLISH = rtc.TrackPublishOptions()
"""The SDK's default for `LocalParticipant.publish_track(options=)` (never modified)."""
_CODECS = {
    "video/vp8": rtc.VideoCodec.VP8,
    "video/h264": rtc.VideoCodec.H264,
    "video/vp9": rtc.VideoCodec.VP9,
    "video/av1": rtc.VideoCodec.AV1,
    "video/h265": rtc.VideoCodec.H265,
}


def check_positive(**values: object) -> None:
    """`ConfigError` unless every value is a positive int (a stream's sample rate and channels)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive int, not {value!r}")


def stream_source(identity: object, source: object, kind: int, *, local: str) -> int:
    """The SDK's source for a stream of `identity`'s track of `source` and `kind`, or `ConfigError`: a stream follows
    a remote participant, and an audio (video) stream an audio (video) source."""
    if not isinstance(identity, str) or not identity:
        raise ConfigError("identity must be a non-empty string")
    if identity == local:
        raise ConfigError(f"{identity!r} is the local participant; streams follow remote participants")
    allowed = AUDIO_SOURCES if kind == rtc.TrackKind.KIND_AUDIO else VIDEO_SOURCES
    if source not in allowed:
        raise ConfigError(f"source must be one of {', '.join(allowed)}, not {source!r}")
    return TRACK_SOURCE_TO_SDK[source]


def options_from_publication(publication: Any) -> rtc.TrackPublishOptions:
    """The options a track whose publish the call did not see is published again with after a rejoin (the call
    keeps the options of every publish it sees; see `Call._watch_publishes`).

    What the publication tells is kept: source, simulcast and codec of video (its mime type is empty until media
    flows), DTX off for audio (LiveKit adds `TF_NO_DTX`), frame metadata features. What it cannot tell (encodings,
    RED, stream name) is the SDK's default.
    """
    options = rtc.TrackPublishOptions(source=publication.source)
    if publication.kind == rtc.TrackKind.KIND_VIDEO:
        options.simulcast = bool(publication.simulcasted)
        codec = _CODECS.get(str(publication.mime_type).lower())
        if codec is not None:
            options.video_codec = codec
    elif AudioTrackFeature.TF_NO_DTX in publication.audio_features:
        options.dtx = False
    options.frame_metadata_features.extend(publication.frame_metadata_features)
    return options


@dataclass(slots=True, eq=False)
class Published:
    """A local track the call publishes again after a rejoin, with the options it was first published with."""

    track: Any  # rtc.LocalAudioTrack | rtc.LocalVideoTrack
    options: rtc.TrackPublishOptions
    info: TrackInfo
    sids: list[str] = field(default_factory=list)
    """Every sid it had, the current one last (`unpublish_track` accepts any of them)."""


class LocalPublications:
    """The local tracks published on the call's Room, by track object, in publication order."""

    __slots__ = ("_expected", "_kept")

    def __init__(self) -> None:
        self._kept: dict[int, Published] = {}
        self._expected: dict[int, rtc.TrackPublishOptions] = {}

    def expect(self, track: object, options: rtc.TrackPublishOptions) -> None:
        """`call.publish_track` is publishing `track` with `options` (a copy is kept)."""
        kept = rtc.TrackPublishOptions()
        kept.CopyFrom(options)
        self._expected[id(track)] = kept

    def abandon(self, track: object) -> None:
        """The publish announced with `expect` failed."""
        self._expected.pop(id(track), None)

    def published(self, publication: Any, track: object) -> Published:
        """`track` is published as `publication` (through the call, directly on the Room, or again after a rejoin)."""
        info = track_info_from_sdk(publication)
        entry = self._kept.get(id(track))
        options = self._expected.pop(id(track), None)
        if entry is None:
            entry = Published(track, options or options_from_publication(publication), info)
            self._kept[id(track)] = entry
        else:
            entry.info = info
        if not entry.sids or entry.sids[-1] != info.sid:
            entry.sids.append(info.sid)
        return entry

    def renamed(self, publication: Any, previous_sid: str) -> None:
        """The SDK published a track again itself (its full restart) under a new sid."""
        entry = self.find(previous_sid)
        if entry is not None:
            self.published(publication, entry.track)

    def find(self, sid: str) -> Published | None:
        """The publication that has or had `sid`."""
        return next((entry for entry in self._kept.values() if sid in entry.sids), None)

    def remove(self, sid: str) -> Published | None:
        """Forget the publication that has `sid` now (unpublished); returns it."""
        entry = next((e for e in self._kept.values() if e.sids and e.sids[-1] == sid), None)
        if entry is not None:
            del self._kept[id(entry.track)]
        return entry

    def forget(self, entry: Published) -> None:
        """Stop keeping `entry` (its publish after a rejoin failed)."""
        if self._kept.get(id(entry.track)) is entry:
            del self._kept[id(entry.track)]

    def kept(self) -> list[Published]:
        """What a rejoin publishes again, in publication order."""
        return list(self._kept.values())

    def clear(self) -> None:
        """Forget everything (the call ended)."""
        self._kept.clear()
        self._expected.clear()


Key = tuple[str, str]
"""(participant identity, track sid)."""


class Subscriptions:
    """The remote subscriptions the app was told of (`track_subscribed` minus `track_unsubscribed`). No I/O.

    While the call is reconnecting (`hold()`), the SDK's unsubscribes and subscribes are not applied; `release()`
    compares what the app was told with what the Room has then. A subscription whose publication is still in the
    Room stays, even if the fresh connection has not subscribed it yet: its `track_subscribed` then passes silently.
    """

    __slots__ = ("_held", "_told")

    def __init__(self) -> None:
        self._told: dict[Key, tuple[Participant, TrackInfo]] = {}
        self._held = False

    def subscribed(self, participant: Participant, track: TrackInfo) -> list[Emit]:
        """The SDK subscribed `track` of `participant`."""
        key = (participant.identity, track.sid)
        if self._held or key in self._told:
            return []
        self._told[key] = (participant, track)
        return [Emit("track_subscribed", (participant, track))]

    def unsubscribed(self, participant: Participant, sid: str) -> list[Emit]:
        """The SDK unsubscribed `sid` (or it was unpublished, or its subscription failed)."""
        if self._held:
            return []
        told = self._told.pop((participant.identity, sid), None)
        return [] if told is None else [Emit("track_unsubscribed", (participant, told[1].model_copy(update=_OFF)))]

    def left(self, participant: Participant) -> list[Emit]:
        """`participant` left for real (even while held: the roster decided it): every subscription of theirs ends."""
        keys = [key for key in self._told if key[0] == participant.identity]
        return [
            Emit("track_unsubscribed", (participant, self._told.pop(key)[1].model_copy(update=_OFF))) for key in keys
        ]

    def told(self) -> list[Key]:
        """Every subscription the app was told of and not told the end of."""
        return list(self._told)

    def hold(self) -> None:
        """A reconnect episode began."""
        self._held = True

    def release(self, published: Iterable[tuple[Participant, TrackInfo]]) -> list[Emit]:
        """The episode ended; `published` is every remote publication in the Room now (`subscribed` as it is)."""
        self._held = False
        now = {(p.identity, t.sid): (p, t) for p, t in published}
        out: list[Emit] = []
        for key in [k for k in self._told if k not in now]:
            participant, track = self._told.pop(key)
            out.append(Emit("track_unsubscribed", (participant, track.model_copy(update=_OFF))))
        for key, (participant, track) in now.items():
            if track.subscribed and key not in self._told:
                self._told[key] = (participant, track)
                out.append(Emit("track_subscribed", (participant, track)))
        return out

    def clear(self) -> None:
        """Forget everything (the call ended)."""
        self._told.clear()
        self._held = False


_OFF = {"subscribed": False}


class CallMedia:
    """A call's media across its Rooms (the one of the moment is `slot.current`): what it publishes, what the app
    was told it subscribes (`subscriptions`, fed by the call's translator), and the streams that follow remote
    tracks. `lost(info)` tells the call that a kept local track could not be published again after a rejoin."""

    def __init__(
        self, slot: RoomSlot, *, auto_subscribe: bool, tasks: Tasks, lost: Callable[[TrackInfo], None]
    ) -> None:
        self._slot = slot
        self._auto_subscribe = auto_subscribe
        self._tasks = tasks
        self._lost = lost
        self.publications = LocalPublications()
        self.subscriptions = Subscriptions()
        self._followers: list[MediaStream[Any]] = []
        self._settled_on: RoomLike | None = None
        self._watched: object = None
        self._republishing: asyncio.Future[None] | None = None

    @property
    def followers(self) -> int:
        """How many streams follow remote tracks now."""
        return len(self._followers)

    # -- local tracks ------------------------------------------------------------------------------------------

    def watch_publishes(self) -> None:
        """Have every publish on the current Room's local participant (through the call or directly on `call.room`)
        keep the options it asked for, for a rejoin to publish it again with: the publication cannot tell them all
        (its mime type is empty until media flows, and the SDK names no codec to the server)."""
        room = self._slot.current
        local = None if room is None else room.local_participant
        if local is None or local is self._watched:
            return
        self._watched = local
        publish = local.publish_track
        publications = self.publications

        async def publish_track(track: Any, options: rtc.TrackPublishOptions = _DEFAULT_PUBLISH) -> Any:
            publications.expect(track, options)
            try:
                return await publish(track, options)
            except BaseException:
                publications.abandon(track)
                raise

        publish_track.__doc__ = publish.__doc__
        setattr(local, "publish_track", publish_track)  # noqa: B010  (an instance attribute over the SDK's method)

    async def publish(self, room: RoomLike, track: Any, options: rtc.TrackPublishOptions) -> TrackInfo:
        """Publish `track` on `room` and keep it. Cancelled, the track is withdrawn once the SDK has published it."""
        # Shielded: the SDK publishes the track even when its publish_track is cancelled, and then forgets it (its
        # local_track_published finds no publication).
        publish = asyncio.ensure_future(room.local_participant.publish_track(track, options))
        try:
            publication = await asyncio.shield(publish)
        except asyncio.CancelledError:
            self._tasks.spawn(self._withdraw(room, publish), "withdraw a cancelled publish")
            raise
        except PublishTrackError as exc:
            raise PublishError(f"publish_track failed: {exc}") from exc
        if room is self._slot.current:
            self.publications.published(publication, track)
        return track_info_from_sdk(publication)

    async def _withdraw(self, room: RoomLike, publish: asyncio.Future[Any]) -> None:
        """Unpublish what a cancelled `publish` published all the same (nothing if it failed)."""
        try:
            publication = await publish
        except Exception:  # the publish failed: nothing to withdraw
            return
        if room is self._slot.current:
            self.publications.remove(publication.sid)
            try:
                # bounded: seen with livekit 1.2.1, an unpublish just after the publish can never return
                await asyncio.wait_for(room.local_participant.unpublish_track(publication.sid), _WITHDRAW_BOUND)
            except (UnpublishTrackError, asyncio.TimeoutError) as exc:
                logger.warning(
                    "could not withdraw the track of a cancelled publish_track: %s", str(exc) or type(exc).__name__
                )

    async def unpublish(self, sid: str, live_room: Callable[[], RoomLike]) -> None:
        """Unpublish the kept track that has or had `sid`, on the Room `live_room()` gives (it raises when there is
        none). Just after a rejoin, waits until the track is published on the fresh Room: its sid there is the one to
        unpublish (a track whose publish failed there is no longer kept, and was told as unpublished)."""
        entry = self.publications.find(sid)
        if entry is None:
            raise ConfigError(f"no local track is published with sid {sid!r}")
        room = live_room()
        republishing = self._republishing
        if republishing is not None and not republishing.done():
            await asyncio.shield(republishing)
            entry = self.publications.find(sid)
            if entry is None:
                return
            room = live_room()
        current = entry.sids[-1]
        self.publications.remove(current)
        try:
            await room.local_participant.unpublish_track(current)
        except UnpublishTrackError as exc:
            raise PublishError(f"unpublish_track failed: {exc}") from exc

    # -- remote tracks -----------------------------------------------------------------------------------------

    def follow(self, identity: str, source: int, kind: int, open_stream: Callable[[Any], Any]) -> MediaStream[Any]:
        """A stream of `identity`'s track of `source` and `kind`, attached at once if the current Room has it."""
        stream: MediaStream[Any] = MediaStream(identity, source, kind, open_stream, self._tasks, self._unfollow)
        self._followers.append(stream)
        room = self._slot.current
        participant = None if room is None else room.remote_participants.get(identity)
        if participant is not None:
            for publication in participant.track_publications.values():
                if (publication.source, publication.kind) == (source, kind) and publication.track is not None:
                    stream._attach(publication.track)
        return stream

    def _unfollow(self, stream: MediaStream[Any]) -> None:
        if stream in self._followers:
            self._followers.remove(stream)

    def subscribed(self, identity: str, track: Any, publication: Any) -> None:
        """The current Room subscribed `track`: the streams that follow its participant and source read it."""
        for stream in self._followers:
            if stream.identity == identity and (stream.source, stream.kind) == (publication.source, publication.kind):
                stream._attach(track)

    def unsubscribed(self, track: Any) -> None:
        """The current Room unsubscribed `track`: the streams that read it wait for the next one."""
        for stream in self._followers:
            if stream.track is track:
                stream._detach()

    def left(self, identity: str) -> None:
        """`identity` left for real: the streams that follow them end."""
        for stream in [s for s in self._followers if s.identity == identity]:
            stream._end()

    # -- the call's life ---------------------------------------------------------------------------------------

    def opening(self) -> None:
        """A fresh Room is being made: the tracks of the earlier one are gone with it."""
        for stream in self._followers:
            stream._detach()

    def connected(self) -> None:
        """The first Room of a session is connected: nothing to restore on it."""
        self._settled_on = self._slot.current

    def settled(self) -> None:
        """The call is back: on a fresh Room (a rejoin), subscribe again without auto-subscribe, and publish again
        what the earlier Room published."""
        room = self._slot.current
        if room is None or room is self._settled_on:
            return
        self._settled_on = room
        if not self._auto_subscribe:
            self._resubscribe(room)
        kept = self.publications.kept()
        if kept:
            self._republishing = self._tasks.spawn(self._republish(room, kept), "publish again after a rejoin")

    def _resubscribe(self, room: RoomLike) -> None:
        """Without auto-subscribe a fresh Room subscribes to nothing: ask it for what the app was subscribed to."""
        for identity, sid in self.subscriptions.told():
            participant = room.remote_participants.get(identity)
            publication = participant.track_publications.get(sid) if participant is not None else None
            if publication is not None and not publication.subscribed:
                publication.set_subscribed(True)

    async def _republish(self, room: RoomLike, kept: list[Published]) -> None:
        for entry in kept:
            if room is not self._slot.current:
                return
            try:
                publication = await room.local_participant.publish_track(entry.track, entry.options)
            except Exception as exc:  # reported as the track's end: the app sees it is no longer published
                if room is not self._slot.current:
                    return
                logger.warning(
                    "could not publish track %s again after a rejoin: %s: %s", entry.info.sid, type(exc).__name__, exc
                )
                self.publications.forget(entry)
                self._lost(entry.info)
            else:
                if room is self._slot.current:  # its local_track_published may come later: an unpublish needs the sid
                    self.publications.published(publication, entry.track)

    def end(self) -> None:
        """The call ended: every stream ends, nothing is kept, nothing is published again."""
        if self._republishing is not None:
            self._republishing.cancel()  # the SDK's publish may never return once the app closed the track
        for stream in list(self._followers):
            stream._end()
        self.publications.clear()
        self.subscriptions.clear()
        self._settled_on = None
