"""Media that outlives a Room: the local publications a rejoin publishes again, the remote subscriptions the app was
told of, and the remote streams that follow a participant's track of one source.

The pump (`_call.Call`) feeds these books from Room callbacks; they hold no Room and make no decisions about the
call's lifecycle. `LocalPublications` and `Subscriptions` are plain bookkeeping (no I/O); `MediaStream` owns the
`rtc.AudioStream` / `rtc.VideoStream` it reads from and the task that pipes it, and closes both when it switches
tracks or ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from livekit import rtc
from livekit.rtc._proto.track_pb2 import AudioTrackFeature  # not re-exported by livekit.rtc

from ._buffered import Buffered
from ._machine import Emit
from ._models import Participant, TrackInfo, track_info_from_sdk

__all__ = [
    "Departures",
    "LocalPublications",
    "MediaStream",
    "Published",
    "Subscriptions",
    "options_from_publication",
]

logger = logging.getLogger("rtcstack")

_Event = TypeVar("_Event", rtc.AudioFrameEvent, rtc.VideoFrameEvent)
Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]

STREAM_BUFFER = 100
"""Frames a `MediaStream` keeps for a reader that falls behind (1 s of 10 ms audio); older ones are dropped."""
_CLOSE_BOUND = 5.0
"""Seconds an SDK stream's `aclose()` may take before its task is cancelled (it waits for the core's end-of-stream)."""
_CODECS = {
    "video/vp8": rtc.VideoCodec.VP8,
    "video/h264": rtc.VideoCodec.H264,
    "video/vp9": rtc.VideoCodec.VP9,
    "video/av1": rtc.VideoCodec.AV1,
    "video/h265": rtc.VideoCodec.H265,
}


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


class Departures:
    """Track departures the SDK reported (unsubscribe, unpublish), applied in order after `grace` seconds.

    A full restart makes the SDK report every remote track gone just before the call shows as reconnecting, as it
    does with the participants; `drop()` (a reconnect episode began) forgets what is still waiting, and `flush()`
    applies a participant's at once when they really leave.
    """

    __slots__ = ("_grace", "_waiting")

    def __init__(self, grace: float) -> None:
        self._grace = grace
        self._waiting: dict[str, list[tuple[asyncio.TimerHandle, Callable[[], None]]]] = {}

    def add(self, identity: str, apply: Callable[[], None]) -> None:
        """Call `apply` after the grace, unless dropped or flushed first."""
        handle = asyncio.get_running_loop().call_later(self._grace, self._due, identity)
        self._waiting.setdefault(identity, []).append((handle, apply))

    def _due(self, identity: str) -> None:
        queue = self._waiting.get(identity)
        if not queue:
            return
        _, apply = queue.pop(0)
        if not queue:
            del self._waiting[identity]
        apply()

    def flush(self, identity: str) -> None:
        """Apply `identity`'s waiting departures now, in order."""
        for handle, apply in self._waiting.pop(identity, []):
            handle.cancel()
            apply()

    def drop(self) -> None:
        """Forget every waiting departure."""
        for queue in self._waiting.values():
            for handle, _ in queue:
                handle.cancel()
        self._waiting.clear()


class MediaStream(Buffered[_Event]):
    """Frames of one remote participant's track of one source, across whatever Room and track carry it.

    The call drives it: `_attach()` points it at a subscribed SDK track (opening an SDK stream on it), `_detach()`
    lets it wait for the next one, `_end()` finishes it. Iterate it with `async for`; the iteration ends after the
    call ends it, and `aclose()` ends it from the reader's side. Nothing of it runs after it ended and its closes
    finished.
    """

    def __init__(
        self,
        identity: str,
        source: int,
        kind: int,
        open_stream: Callable[[Any], Any],
        spawn: Spawn,
        on_end: Callable[[MediaStream[Any]], None],
    ) -> None:
        super().__init__(maxlen=STREAM_BUFFER)
        self.identity = identity
        self.source = source
        self.kind = kind
        self._open = open_stream
        self._spawn = spawn
        self._on_end = on_end
        self._track: Any = None
        self._inner: Any = None
        self._pipe: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[Any]] = set()

    @property
    def ended(self) -> bool:
        """True once the stream was ended (participant left, call ended, or `aclose()`)."""
        return self._ended

    @property
    def track(self) -> Any:
        """The SDK track frames come from now, or None."""
        return self._track

    def _attach(self, track: Any) -> None:
        """Read frames from `track` (a subscribed remote track of this participant and source) from now on."""
        if self._ended or track is self._track:
            return
        self._detach()
        try:
            inner = self._open(track)
        except Exception as exc:  # an FFI request the core refused: the stream waits for the next track
            logger.warning(
                "could not open a media stream on %s's track: %s: %s", self.identity, type(exc).__name__, exc
            )
            return
        self._track, self._inner = track, inner
        self._pipe = self._spawn(self._run(inner))

    def _detach(self) -> None:
        """The track went away: close what read it and wait for the next one."""
        pipe, inner = self._pipe, self._inner
        self._pipe = self._track = self._inner = None
        if pipe is not None and inner is not None:
            pipe.cancel()
            closing = self._spawn(_close(pipe, inner))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def _end(self) -> None:
        """No more frames: the participant left, the call ended, or the reader closed the stream."""
        if self._ended:
            return
        self._ended = True
        self._detach()
        self._wake()
        self._on_end(self)

    async def _run(self, inner: Any) -> None:
        async for event in inner:
            self._buffer.append(event)
            self._wake()

    async def aclose(self) -> None:
        """End the stream now and wait until its SDK stream is closed."""
        self._buffer.clear()
        self._end()
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def _close(pipe: asyncio.Task[None], inner: Any) -> None:
    """Close an SDK stream once the task that read it has ended (a cancelled task may not have started)."""
    await asyncio.wait([pipe])
    try:
        await asyncio.wait_for(inner.aclose(), _CLOSE_BOUND)
    except asyncio.TimeoutError:
        logger.warning("an SDK media stream did not close within %g s; its reader was cancelled", _CLOSE_BOUND)
