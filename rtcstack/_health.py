"""Media health: is each watched track's media flowing? (DESIGN.md rule 8)

`MediaWatch` is pure bookkeeping with no I/O and no clock of its own: the owner says which tracks to watch and
feeds it samples of cumulative counters (`Counters`) with the time they were taken; it answers with
`TrackStalled`, `TrackResumed` and `MediaRestored` outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._vocab import MediaHealthName, StallReason

__all__ = [
    "Counters",
    "HealthOutput",
    "MediaRestored",
    "MediaWatch",
    "TrackResumed",
    "TrackStalled",
]


@dataclass(frozen=True, slots=True)
class Counters:
    """One track's cumulative counters in one stats sample."""

    packets: int
    """Packets received (a remote track) or sent (a local track; simulcast layers summed)."""
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
    packets_moved: bool = False
    """Packets advanced since `since` (frames did not, or it would have flowed): a video stall is ``no_frames``."""


class MediaWatch:
    """Flow and stall of the watched tracks, by sid, from samples of their counters.

    A track flows when its packets advance between two samples (for video, its frames too). A watched track that
    does not flow for ``stall_timeout`` seconds (since its last flow, or since its clock started: watched, or the
    end of a reconnect episode) stalls once (`TrackStalled`) and resumes (`TrackResumed`) when it flows again. A
    track missing from a sample did not advance; counters lower than the last ones are a fresh baseline (a new
    Room's stats start from zero), not an advance.

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
                track.media, track.since, track.packets_moved = "flowing", now, False
                if self._ended:
                    self._awaited.discard(sid)
            elif not reconnecting and track.media != "stalled" and now - track.since >= self._timeout:
                track.media = "stalled"
                reason: StallReason = "no_frames" if track.packets_moved else "no_packets"
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
            track.since, track.packets_moved = now, False

    def _advanced(self, track: _Track, current: Counters | None) -> bool:
        """Whether ``current`` advanced from the track's baseline, which it becomes (counters that went down are
        thus a fresh baseline)."""
        if current is None:
            return False
        baseline, track.baseline = track.baseline, current
        if baseline is None:
            return False
        packets = current.packets > baseline.packets
        if not track.video or current.frames is None or baseline.frames is None:
            return packets
        if packets and current.frames == baseline.frames:
            track.packets_moved = True
            return False
        return packets and current.frames > baseline.frames

    def _restored(self, now: float) -> MediaRestored:
        assert self._episode_start is not None  # only called for an episode that ended
        restored = MediaRestored(now - self._episode_start)
        self._episode_start, self._ended = None, False
        return restored
