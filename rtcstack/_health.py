"""Media health: is each watched track's media flowing? (DESIGN.md rule 8)

Three parts:

- `MediaWatch`, pure bookkeeping with no I/O and no clock of its own: the owner says which tracks to watch and
  feeds it samples of cumulative counters (`Counters`) with the time they were taken; it answers with
  `TrackStalled`, `TrackResumed` and `MediaRestored` outputs.
- `counters_from_stats` and `stats_key`, pure readers of the livekit SDK's RTC stats. The stats never carry a
  track's sid: an inbound-rtp entry names its receiver's track id (a UUID libwebrtc makes up) and an outbound-rtp
  entry its media source, whose track id is the local track's. `counters_from_stats` keys each track's counters by
  that track id; `stats_key` finds a track's id among the stats of ``await track.get_stats()``.
- `Sampler`, the small async loop that reads the Room's stats once per interval, keys them by sid (asking
  `stats_key` for tracks it does not know yet) and feeds the watch.
- `CallHealth`, a call's watch: the tracks the call's translator says to watch, a sampler for each session, and the
  outputs handed to the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from ._tasks import Tasks
from ._vocab import MediaHealthName, StallReason

if TYPE_CHECKING:
    from livekit.rtc import RtcStats
    from livekit.rtc._proto.stats_pb2 import RtcStats as RtcStatsEntry  # one entry; not re-exported by livekit.rtc

__all__ = [
    "SAMPLES_PER_TIMEOUT",
    "CallHealth",
    "Counters",
    "HealthOutput",
    "MediaRestored",
    "MediaWatch",
    "Sampler",
    "StatsTrack",
    "TrackResumed",
    "TrackStalled",
    "counters_from_stats",
    "stats_key",
]

logger = logging.getLogger("rtcstack")

_R = TypeVar("_R")

SAMPLES_PER_TIMEOUT = 2
"""Stats reads per ``media_stall_timeout``: a stall is told between the timeout and the timeout plus one sample
after the last flow seen. Each read costs the SDK about 1.3 ms of CPU for a Room with 4 tracks (measured); three
per timeout cost 0.6 % of a core per call at 50 calls, over the 0.5 % goal."""


@dataclass(frozen=True, slots=True)
class Counters:
    """One track's cumulative counters in one stats sample."""

    payload: int
    """Payload bytes received (a remote track) or sent (a local track; simulcast layers summed). Bytes, not
    packets: libwebrtc counts the padding it sends to probe the bandwidth (packets without payload) in a video
    track's packets sent, so those go on for a camera that gets no more frames."""
    frames: int | None
    """Video frames decoded (remote) or encoded (local); None for audio."""


@dataclass(frozen=True, slots=True)
class TrackStalled:
    identity: str
    sid: str
    reason: StallReason


@dataclass(frozen=True, slots=True)
class TrackResumed:
    identity: str
    sid: str
    stalled_for: float
    """Seconds from the start of the stall (the track's last flow, or the start of its clock) to its resumption."""


@dataclass(frozen=True, slots=True)
class MediaRestored:
    after: float
    """Seconds from the start of the reconnect episode until every track that flowed before it flowed again."""


HealthOutput = TrackStalled | TrackResumed | MediaRestored


@dataclass(slots=True)
class _Track:
    identity: str
    video: bool
    since: float
    """When the current window began: the last flow, or when the clock (re)started."""
    media: MediaHealthName = "unknown"
    baseline: Counters | None = None
    payload_moved: bool = False
    """Payload advanced since `since` (frames did not, or it would have flowed): a video stall is ``no_frames``."""


class MediaWatch:
    """Flow and stall of the watched tracks, by sid, from samples of their counters.

    A track flows when its media advances between two samples: payload (``no_packets`` when it does not), and for
    video frames too (``no_frames`` when payload advances without them). A watched track that
    does not flow for ``stall_timeout`` seconds (since its last flow, or since its clock started: watched, or the
    end of a reconnect episode) stalls once (`TrackStalled`) and resumes (`TrackResumed`) when it flows again. A
    track missing from a sample did not advance; counters lower than the last ones come from a new receiver or
    sender (a fresh Room's stats start from zero, and receivers are only replaced while reconnecting): they
    advanced if they counted anything.

    A reconnect episode runs from `episode_started` to `episode_ended`; nothing stalls in it. The tracks that were
    flowing when it started and are still watched at its end are awaited: each counts once it flows in a sample
    taken after the end, and when none is left, `MediaRestored` is given, once per episode. A track that is still
    without media ``stall_timeout`` after the end stalls; `MediaRestored` then follows its resumption.

    Corners: `watch` of a watched sid restarts its clock and keeps its state (flowing, stalled, awaited); a track
    first watched during an episode is not awaited and its clock restarts at the episode's end; `rename` of a sid
    that is not watched does nothing, and onto a watched sid replaces that watch; `episode_ended` without an
    episode gives nothing. An awaited track that is unwatched is no longer awaited: if it was the last one,
    `MediaRestored` comes with the next sample (or at once from `episode_ended`).
    """

    def __init__(self, stall_timeout: float) -> None:
        self._timeout = stall_timeout
        self._tracks: dict[str, _Track] = {}
        self._episode_start: float | None = None
        self._ended = False
        """The episode has ended and its `MediaRestored` is still to come."""
        self._awaited: set[str] = set()

    def watch(self, sid: str, identity: str, *, video: bool, now: float) -> None:
        """Watch a subscribed remote track or a published local track, unmuted; its clock starts at ``now``."""
        track = self._tracks.get(sid)
        if track is None:
            self._tracks[sid] = _Track(identity, video, since=now)
            return
        track.identity, track.video = identity, video
        self._restart(track, now)

    def unwatch(self, sid: str) -> None:
        """The track was muted, unpublished or unsubscribed: its watch ends, with no output."""
        self._tracks.pop(sid, None)
        self._awaited.discard(sid)

    def unwatch_participant(self, identity: str) -> None:
        """The participant left: the watch of each of its tracks ends."""
        for sid in [sid for sid, track in self._tracks.items() if track.identity == identity]:
            self.unwatch(sid)

    def rename(self, old_sid: str, new_sid: str) -> None:
        """The track watched as ``old_sid`` goes on as ``new_sid`` (a local track republished after a rejoin)."""
        track = self._tracks.pop(old_sid, None)
        if track is None:
            return
        self.unwatch(new_sid)
        self._tracks[new_sid] = track
        if old_sid in self._awaited:
            self._awaited.remove(old_sid)
            self._awaited.add(new_sid)

    def media(self, sid: str) -> MediaHealthName:
        """``"flowing"``, ``"stalled"``, or ``"unknown"`` (not watched, or neither flowed nor stalled yet)."""
        track = self._tracks.get(sid)
        return "unknown" if track is None else track.media

    def sample(self, counters: Mapping[str, Counters], now: float) -> list[HealthOutput]:
        """Take a sample of the tracks' counters (by sid) read at ``now``."""
        outputs: list[HealthOutput] = []
        reconnecting = self._episode_start is not None and not self._ended
        for sid, track in self._tracks.items():
            if self._advanced(track, counters.get(sid)):
                if track.media == "stalled":
                    outputs.append(TrackResumed(track.identity, sid, now - track.since))
                track.media, track.since, track.payload_moved = "flowing", now, False
                if self._ended:
                    self._awaited.discard(sid)
            elif not reconnecting and track.media != "stalled" and now - track.since >= self._timeout:
                track.media = "stalled"
                reason: StallReason = "no_frames" if track.payload_moved else "no_packets"
                outputs.append(TrackStalled(track.identity, sid, reason))
        if self._ended and not self._awaited:
            outputs.append(self._restored(now))
        return outputs

    def episode_started(self, now: float) -> None:
        """The call is reconnecting: no `TrackStalled` until `episode_ended`. A start while an episode runs, or
        before its `MediaRestored`, continues that episode (its start time stays; the tracks flowing now join the
        awaited ones)."""
        if self._episode_start is None:
            self._episode_start = now
        self._ended = False
        self._awaited |= {sid for sid, track in self._tracks.items() if track.media == "flowing"}

    def episode_ended(self, now: float) -> list[HealthOutput]:
        """The call reconnected: every clock restarts at ``now``; `MediaRestored` at once if nothing is awaited."""
        if self._episode_start is None or self._ended:
            return []
        self._ended = True
        for track in self._tracks.values():
            self._restart(track, now)
        return [self._restored(now)] if not self._awaited else []

    def clear(self) -> None:
        """The call ended: nothing is watched and no episode runs."""
        self._tracks.clear()
        self._awaited.clear()
        self._episode_start, self._ended = None, False

    def _restart(self, track: _Track, now: float) -> None:
        if track.media != "stalled":
            track.since, track.payload_moved = now, False

    def _advanced(self, track: _Track, current: Counters | None) -> bool:
        """Whether ``current`` advanced from the track's baseline, which it becomes (counters that went down are
        counted from zero)."""
        if current is None:
            return False
        baseline, track.baseline = track.baseline, current
        if baseline is None:
            return False
        if current.payload < baseline.payload or (
            current.frames is not None and baseline.frames is not None and current.frames < baseline.frames
        ):  # a new receiver or sender (a fresh Room, a restart): everything it counted came since the last sample
            baseline = Counters(0, None if current.frames is None else 0)
        payload = current.payload > baseline.payload
        if not track.video or current.frames is None or baseline.frames is None:
            return payload
        if payload and current.frames == baseline.frames:
            track.payload_moved = True
            return False
        return payload and current.frames > baseline.frames

    def _restored(self, now: float) -> MediaRestored:
        assert self._episode_start is not None  # only called for an episode that ended
        restored = MediaRestored(now - self._episode_start)
        self._episode_start, self._ended = None, False
        return restored


def counters_from_stats(stats: RtcStats) -> dict[str, Counters]:
    """Each track's counters in one ``await room.get_rtc_stats()``, keyed by its track id in the stats.

    Remote tracks from the inbound-rtp entries (``track_identifier``: bytes received, frames decoded for video);
    local tracks from the outbound-rtp entries through their media source (``track_identifier``: bytes sent,
    frames encoded for video), summed over the entries of one track (a simulcast track has one per layer). Both
    lists are read: with a single peer connection (livekit 1.2's default) everything is in ``publisher_stats``.
    """
    entries = [*stats.publisher_stats, *stats.subscriber_stats]
    sources = {
        entry.media_source.rtc.id: entry.media_source.source.track_identifier
        for entry in entries
        if entry.WhichOneof("stats") == "media_source"
    }
    counters: dict[str, Counters] = {}
    for entry in entries:
        kind = entry.WhichOneof("stats")
        if kind == "inbound_rtp":
            inbound = entry.inbound_rtp
            video = inbound.stream.kind == "video"
            key = inbound.inbound.track_identifier
            frames = inbound.inbound.frames_decoded if video else None
            _add(counters, key, inbound.inbound.bytes_received, frames)
        elif kind == "outbound_rtp":
            outbound = entry.outbound_rtp
            source = sources.get(outbound.outbound.media_source_id)
            if source is not None:
                frames = outbound.outbound.frames_encoded if outbound.stream.kind == "video" else None
                _add(counters, source, outbound.sent.bytes_sent, frames)
    return counters


def _add(counters: dict[str, Counters], key: str, payload: int, frames: int | None) -> None:
    if not key:
        return
    known = counters.get(key)
    if known is not None:
        payload += known.payload
        frames = None if frames is None or known.frames is None else frames + known.frames
    counters[key] = Counters(payload, frames)


def stats_key(track_stats: Iterable[RtcStatsEntry]) -> str | None:
    """The key of a track's counters in `counters_from_stats`, from that track's own stats
    (``await track.get_stats()``); None while it has none (a remote track before its first packet)."""
    for entry in track_stats:
        kind = entry.WhichOneof("stats")
        if kind == "inbound_rtp" and entry.inbound_rtp.inbound.track_identifier:
            return entry.inbound_rtp.inbound.track_identifier
        if kind == "media_source" and entry.media_source.source.track_identifier:
            return entry.media_source.source.track_identifier
    return None


class StatsTrack(Protocol):
    """What the sampler needs of a watched track: its own stats (`livekit.rtc.Track` has them)."""

    async def get_stats(self) -> list[RtcStatsEntry]: ...


class Sampler:
    """Reads the Room's stats every ``interval`` seconds and feeds them to ``watch``; the outputs of a sample, if
    any, go to ``on_outputs``.

    ``tracks()`` gives the tracks to sample (the watched ones) by sid; with none, the stats are not read. Each
    one's stats key is asked of the track once (`stats_key`) and asked again while it is missing from the Room's
    stats (a remote track before its first packet, or a receiver replaced by a restart). A ``get_stats`` that
    raises or takes longer than ``interval`` is skipped: no sample, so no stall is counted from it (logged at
    debug level once per run of failures).
    """

    def __init__(
        self,
        get_stats: Callable[[], Awaitable[RtcStats]],
        tracks: Callable[[], Mapping[str, StatsTrack]],
        watch: MediaWatch,
        on_outputs: Callable[[list[HealthOutput]], None],
        tasks: Tasks,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._get_stats = get_stats
        self._tracks = tracks
        self._watch = watch
        self._on_outputs = on_outputs
        self._tasks = tasks
        self._interval = interval
        self._clock = clock
        self._keys: dict[str, tuple[StatsTrack, str]] = {}
        self._failing = False
        """The last sample had a failed read (a run of failures is logged once)."""
        self._failed = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling (once; a running sampler goes on)."""
        if self._task is None:
            self._task = self._tasks.spawn(self._run(), "media health sampler")

    async def stop(self) -> None:
        """Stop sampling and wait until the loop has ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._keys.clear()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.sample_once()

    async def sample_once(self) -> None:
        """Read the stats once and feed the watch (skipped if the read fails)."""
        self._failed = False
        try:
            await self._sample()
        finally:
            self._failing = self._failed

    async def _sample(self) -> None:
        tracks = self._tracks()
        for sid in [sid for sid in self._keys if sid not in tracks]:
            del self._keys[sid]
        found: dict[str, Counters] = {}
        if tracks:  # with nothing to sample the stats are not read; the watch still gets its sample (its clock)
            stats = await self._bounded(self._get_stats(), "get_rtc_stats")
            if stats is None:
                return
            found = counters_from_stats(stats)
        now = self._clock()
        counters: dict[str, Counters] = {}
        for sid, track in tracks.items():
            key = await self._key(sid, track, found)
            if key is not None and key in found:
                counters[sid] = found[key]
        outputs = self._watch.sample(counters, now)
        if outputs:
            self._on_outputs(outputs)

    async def _key(self, sid: str, track: StatsTrack, found: Mapping[str, Counters]) -> str | None:
        known = self._keys.get(sid)
        if known is not None and known[0] is track and known[1] in found:
            return known[1]
        track_stats = await self._bounded(track.get_stats(), f"the stats of track {sid}")
        key = None if track_stats is None else stats_key(track_stats)
        if key is None:
            self._keys.pop(sid, None)
        else:
            self._keys[sid] = (track, key)
        return key

    async def _bounded(self, read: Awaitable[_R], what: str) -> _R | None:
        """The result of ``read``, or None if it raised or did not answer within the interval.

        Not `asyncio.wait_for`: on Python 3.10 and 3.11 it can swallow a cancellation that comes as ``read`` ends,
        and `stop` would then wait for a loop that goes on."""
        task = asyncio.ensure_future(read)
        try:
            await asyncio.wait({task}, timeout=self._interval)
        finally:
            task.cancel()  # no-op once it is done
        error = task.exception() if task.done() and not task.cancelled() else TimeoutError("no answer in time")
        if error is None:
            return task.result()
        if not self._failing and not self._failed:
            logger.debug("media health: reading %s failed (%s: %s); skipping", what, type(error).__name__, error)
        self._failed = True
        return None


class _TellingWatch(MediaWatch):
    """A `MediaWatch` that also tells, after each sample, whose tracks' media changed (their snapshots are stale)."""

    def __init__(self, stall_timeout: float, changed: Callable[[set[str]], None]) -> None:
        super().__init__(stall_timeout)
        self._changed = changed

    def sample(self, counters: Mapping[str, Counters], now: float) -> list[HealthOutput]:
        before = {sid: track.media for sid, track in self._tracks.items()}
        outputs = super().sample(counters, now)
        changed = {track.identity for sid, track in self._tracks.items() if before.get(sid) != track.media}
        if changed:
            self._changed(changed)
        return outputs


class CallHealth:
    """The media health of a call's tracks: the call's translator says which to watch (`watch`, `unwatch`...), a
    `Sampler` reads ``get_stats()`` (the Room of the moment) `SAMPLES_PER_TIMEOUT` times per ``timeout`` while a
    session runs (`start`, `end`), and the watch's outputs go to ``on_outputs``; ``changed`` gets the identities
    whose tracks' media changed in a sample. With ``timeout`` None nothing is watched or read and every track's
    media is ``"unknown"``."""

    def __init__(
        self,
        timeout: float | None,
        get_stats: Callable[[], Awaitable[RtcStats]],
        on_outputs: Callable[[list[HealthOutput]], None],
        changed: Callable[[set[str]], None],
        tasks: Tasks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tracks: dict[str, tuple[str, StatsTrack]] = {}
        self._on_outputs = on_outputs
        self._tasks = tasks
        self._clock = clock
        self._watch: MediaWatch | None = None
        self._sampler: Sampler | None = None
        if timeout is not None:
            watch = self._watch = _TellingWatch(timeout, changed)
            self._sampler = Sampler(
                get_stats, self._sampled, watch, on_outputs, tasks, interval=timeout / SAMPLES_PER_TIMEOUT, clock=clock
            )

    def _sampled(self) -> dict[str, StatsTrack]:
        return {sid: track for sid, (_, track) in self._tracks.items()}

    def media(self, sid: str) -> MediaHealthName:
        return "unknown" if self._watch is None else self._watch.media(sid)

    def watch(self, sid: str, identity: str, track: StatsTrack, *, video: bool) -> None:
        """Watch `track` (subscribed, or published; unmuted) as `sid` of `identity` (again: its clock restarts)."""
        if self._watch is not None:
            self._tracks[sid] = (identity, track)
            self._watch.watch(sid, identity, video=video, now=self._clock())

    def unwatch(self, sid: str) -> None:
        """Muted, unpublished or unsubscribed: not a stall, the watch of that track ends."""
        if self._watch is not None:
            self._tracks.pop(sid, None)
            self._watch.unwatch(sid)

    def left(self, identity: str) -> None:
        for sid in [sid for sid, (owner, _) in self._tracks.items() if owner == identity]:
            self.unwatch(sid)

    def rename(self, old_sid: str, new_sid: str) -> None:
        """A local track published again under a new sid goes on with its history."""
        if self._watch is not None and old_sid in self._tracks:
            self._tracks[new_sid] = self._tracks.pop(old_sid)
            self._watch.rename(old_sid, new_sid)

    def keep_only(self, sids: Iterable[str]) -> None:
        """Unwatch every track but `sids` (what the Room has when a reconnect episode ends)."""
        keep = set(sids)
        for sid in [sid for sid in self._tracks if sid not in keep]:
            self.unwatch(sid)

    def start(self) -> None:
        """A session began: sample until `end`."""
        if self._sampler is not None:
            self._sampler.start()

    def episode_started(self) -> None:
        if self._watch is not None:
            self._watch.episode_started(self._clock())

    def episode_ended(self) -> None:
        """The call is back; a `MediaRestored` due at once is handed over just after (once `reconnected` is out)."""
        if self._watch is not None:
            outputs = self._watch.episode_ended(self._clock())
            if outputs:
                asyncio.get_running_loop().call_soon(self._on_outputs, outputs)

    def end(self) -> None:
        """The call ended: nothing is watched, the sampler stops (a task of `tasks`)."""
        self._tracks.clear()
        if self._watch is not None and self._sampler is not None:
            self._watch.clear()
            self._tasks.spawn(self._sampler.stop(), "stop the media health sampler")
