"""Media health: the pure watch driven by tables of steps, the stats readers on protobuf stats, and the sampler
with a fake ``get_stats`` (no network)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from livekit import rtc
from livekit.rtc._proto import stats_pb2 as pb

from rtcstack._health import (
    Counters,
    HealthOutput,
    MediaRestored,
    MediaWatch,
    Sampler,
    StatsTrack,
    TrackResumed,
    TrackStalled,
    counters_from_stats,
    stats_key,
)
from rtcstack._tasks import Tasks
from rtcstack._vocab import MediaHealthName, StallReason

TIMEOUT = 2.0

# ---------------------------------------------------------------------------------------------------------------------
# The steps of a table: each acts on the watch; the outputs of all steps are collected as (now, output).


@dataclass(frozen=True)
class W:
    """watch(sid, identity, video=, now=)"""

    sid: str
    now: float
    video: bool = False
    identity: str = "bob"


@dataclass(frozen=True)
class S:
    """sample(counters, now): an int is an audio track's payload, a pair a video track's (payload, frames)."""

    now: float
    counters: Mapping[str, int | tuple[int, int | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Start:
    now: float


@dataclass(frozen=True)
class End:
    now: float


@dataclass(frozen=True)
class U:
    sid: str


@dataclass(frozen=True)
class Leave:
    identity: str


@dataclass(frozen=True)
class R:
    old: str
    new: str


@dataclass(frozen=True)
class Clear:
    pass


@dataclass(frozen=True)
class M:
    """Assert media(sid) at this point."""

    sid: str
    media: MediaHealthName


Step = W | S | Start | End | U | Leave | R | Clear | M


def stalled(sid: str, reason: StallReason = "no_packets", identity: str = "bob") -> TrackStalled:
    return TrackStalled(identity, sid, reason)


def resumed(sid: str, stalled_for: float, identity: str = "bob") -> TrackResumed:
    return TrackResumed(identity, sid, stalled_for)


def counters(raw: Mapping[str, int | tuple[int, int | None]]) -> dict[str, Counters]:
    return {sid: Counters(v, None) if isinstance(v, int) else Counters(*v) for sid, v in raw.items()}


def seq(*parts: list[Step]) -> list[Step]:
    """The steps of ``parts``, one after the other (a table row's steps on several lines)."""
    return [step for part in parts for step in part]


def run(steps: list[Step], timeout: float = TIMEOUT) -> list[tuple[float, HealthOutput]]:
    watch = MediaWatch(timeout)
    out: list[tuple[float, HealthOutput]] = []
    for step in steps:
        if isinstance(step, W):
            watch.watch(step.sid, step.identity, video=step.video, now=step.now)
        elif isinstance(step, S):
            out += [(step.now, o) for o in watch.sample(counters(step.counters), step.now)]
        elif isinstance(step, Start):
            watch.episode_started(step.now)
        elif isinstance(step, End):
            out += [(step.now, o) for o in watch.episode_ended(step.now)]
        elif isinstance(step, U):
            watch.unwatch(step.sid)
        elif isinstance(step, Leave):
            watch.unwatch_participant(step.identity)
        elif isinstance(step, R):
            watch.rename(step.old, step.new)
        elif isinstance(step, Clear):
            watch.clear()
        else:
            assert watch.media(step.sid) == step.media, f"media({step.sid!r}) before step {steps.index(step)}"
    return out


# a flows from 0 to 1 (last advance at 1)
FLOWED: list[Step] = [W("a", 0), S(0, {"a": 1}), S(1, {"a": 2})]

CASES: dict[str, tuple[list[Step], list[tuple[float, HealthOutput]]]] = {
    # flow and stall
    "advancing payload flows": (
        [
            W("a", 0),
            M("a", "unknown"),
            S(0, {"a": 1}),
            M("a", "unknown"),
            S(1, {"a": 2}),
            M("a", "flowing"),
            S(2.5, {"a": 3}),
            S(4, {"a": 4}),
            S(5.5, {"a": 5}),
            M("a", "flowing"),
        ],
        [],
    ),
    "stalls stall_timeout after its last flow, once": (
        [*FLOWED, S(2, {"a": 2}), S(2.9, {"a": 2}), S(3, {"a": 2}), M("a", "stalled"), S(4, {"a": 2}), S(9, {})],
        [(3, stalled("a"))],
    ),
    "a track that never flows stalls stall_timeout after it was watched": (
        [W("a", 0.5), S(1, {"a": 7}), S(2, {"a": 7}), S(2.4, {"a": 7}), S(2.5, {"a": 7})],
        [(2.5, stalled("a"))],
    ),
    "a track missing from every sample stalls (no inbound-rtp before the first packet)": (
        [W("a", 0), S(1), S(1.9), S(2), S(3)],
        [(2, stalled("a"))],
    ),
    "missing from a sample is not an advance, and the next one counts from the last counters": (
        [*FLOWED, S(2), S(2.5, {"a": 3}), S(4), S(4.4, {"a": 3}), S(4.5)],
        [(4.5, stalled("a"))],
    ),
    "resumes when it flows again; stalled_for runs from its last flow": (
        [*FLOWED, S(3, {"a": 2}), S(4, {"a": 2}), S(5, {"a": 3}), M("a", "flowing")],
        [(3, stalled("a")), (5, resumed("a", 4.0))],
    ),
    "stalls again after resuming": (
        [*FLOWED, S(3, {"a": 2}), S(5, {"a": 3}), S(6.9, {"a": 3}), S(7, {"a": 3}), S(8, {"a": 4})],
        [(3, stalled("a")), (5, resumed("a", 4.0)), (7, stalled("a")), (8, resumed("a", 3.0))],
    ),
    "a never-flowing track resumes from when it was watched": (
        [W("a", 0), S(0, {"a": 1}), S(2, {"a": 1}), S(3, {"a": 2})],
        [(2, stalled("a")), (3, resumed("a", 3.0))],
    ),
    "video flows when payload and frames advance": (
        [W("v", 0, video=True), S(0, {"v": (1, 1)}), S(1, {"v": (2, 2)}), S(2.5, {"v": (3, 3)}), M("v", "flowing")],
        [],
    ),
    "video payload without frames: no_frames": (
        [W("v", 0, video=True), S(0, {"v": (1, 1)}), S(1, {"v": (5, 1)}), S(2, {"v": (9, 1)}), M("v", "stalled")],
        [(2, stalled("v", "no_frames"))],
    ),
    "video with neither: no_packets": (
        [W("v", 0, video=True), S(0, {"v": (1, 1)}), S(1, {"v": (1, 1)}), S(2, {"v": (1, 1)})],
        [(2, stalled("v", "no_packets"))],
    ),
    "video frames without payload do not flow": (
        [W("v", 0, video=True), S(0, {"v": (1, 1)}), S(1, {"v": (1, 2)}), S(2, {"v": (1, 3)})],
        [(2, stalled("v", "no_packets"))],
    ),
    "no_frames counts payload since the last flow only": (
        [
            W("v", 0, video=True),
            S(0, {"v": (1, 1)}),
            S(1, {"v": (2, 1)}),
            S(2, {"v": (3, 2)}),
            S(3, {"v": (3, 2)}),
            S(4, {"v": (3, 2)}),
        ],
        [(4, stalled("v", "no_packets"))],
    ),
    "video no_frames resumes when frames come": (
        [W("v", 0, video=True), S(0, {"v": (1, 1)}), S(2, {"v": (5, 1)}), S(3, {"v": (6, 2)})],
        [(2, stalled("v", "no_frames")), (3, resumed("v", 3.0))],
    ),
    "video counters without frames are judged by payload": (
        [W("v", 0, video=True), S(0, {"v": (1, None)}), S(1, {"v": (2, None)}), S(2.9, {"v": (2, None)})],
        [],
    ),
    "counters that go down come from a new receiver or sender: counting anything is an advance": (
        [W("a", 0), S(0, {"a": 100}), S(1, {"a": 5}), M("a", "flowing"), S(2, {"a": 5}), S(2.9, {"a": 5}), S(3)],
        [(3, stalled("a"))],
    ),
    "a new receiver that counted nothing yet did not advance": (
        [W("a", 0), S(0, {"a": 100}), S(1, {"a": 0}), S(1.5, {"a": 0}), S(2, {"a": 0})],
        [(2, stalled("a"))],
    ),
    "video frames that go down come from a new receiver too": (
        [W("v", 0, video=True), S(0, {"v": (100, 100)}), S(1, {"v": (101, 5)}), M("v", "flowing"), S(3)],
        [(3, stalled("v", "no_packets"))],
    ),
    "a new video receiver with payload and no frame: no_frames": (
        [W("v", 0, video=True), S(0, {"v": (100, 100)}), S(1, {"v": (5, 0)}), S(2, {"v": (5, 0)})],
        [(2, stalled("v", "no_frames"))],
    ),
    "outputs carry the identity given to watch": (
        [W("a", 0, identity="carol"), S(2)],
        [(2, stalled("a", identity="carol"))],
    ),
    # exclusions
    "mute, unpublish, unsubscribe (unwatch) are not stalls": (
        [*FLOWED, U("a"), M("a", "unknown"), S(5), S(10, {"a": 2})],
        [],
    ),
    "unwatch of an unknown sid does nothing": ([*FLOWED, U("x"), S(3, {"a": 3})], []),
    "a participant that leaves is not a stall; the others still are": (
        [W("a", 0), W("b", 0), W("c", 0, identity="carol"), Leave("bob"), S(2)],
        [(2, stalled("c", identity="carol"))],
    ),
    "the call's end (clear) is not a stall": ([*FLOWED, Start(1.5), Clear(), S(5), M("a", "unknown"), End(6)], []),
    "watched again after clear, a track starts fresh": (
        [*FLOWED, Clear(), W("a", 5), S(5, {"a": 1}), S(6, {"a": 2}), S(8, {"a": 2})],
        [(8, stalled("a"))],
    ),
    # episodes
    "nothing stalls while reconnecting": (
        [*FLOWED, Start(1.5), S(4, {"a": 2}), S(10, {}), S(20, {"a": 2}), M("a", "flowing")],
        [],
    ),
    "media_restored when the awaited track flows after the end": (
        [*FLOWED, Start(1.5), S(4, {"a": 2}), End(5), S(5.5, {"a": 2}), S(6, {"a": 3})],
        [(6, MediaRestored(4.5))],
    ),
    "advances during the episode do not count": (
        [*FLOWED, Start(1.5), S(2, {"a": 3}), S(3, {"a": 4}), End(4), S(4.5, {"a": 4}), S(5, {"a": 5})],
        [(5, MediaRestored(3.5))],
    ),
    "media_restored once per episode": (
        [
            *FLOWED,
            Start(1.5),
            End(2),
            S(3, {"a": 3}),
            S(4, {"a": 4}),
            S(5, {"a": 5}),
            Start(6),
            End(7),
            S(8, {"a": 6}),
            S(9, {"a": 7}),
        ],
        [(3, MediaRestored(1.5)), (8, MediaRestored(2.0))],
    ),
    "nothing awaited: media_restored at once from the end": ([Start(1), End(3), S(4)], [(3, MediaRestored(2.0))]),
    "a second start keeps the first start time": ([Start(1), Start(2), End(3)], [(3, MediaRestored(2.0))]),
    "a start before media_restored continues the episode": (
        [*FLOWED, Start(1.5), End(2), Start(3), End(4), S(5, {"a": 3}), S(6, {"a": 4})],
        [(5, MediaRestored(3.5))],
    ),
    "a track that flowed again before a second start is awaited again": (
        [
            *FLOWED,
            W("b", 0),
            S(0.5, {"b": 1}),
            S(1, {"a": 2, "b": 2}),
            Start(1.5),
            End(2),
            S(2.5, {"a": 3, "b": 2}),
            Start(3),
            End(3.5),
            S(4, {"a": 3, "b": 3}),
            S(4.5, {"a": 4, "b": 3}),
        ],
        [(4.5, MediaRestored(3.0))],
    ),
    "an end without an episode, or a second end, gives nothing": (
        [End(1), Start(2), End(3), End(4)],
        [(3, MediaRestored(1.0))],
    ),
    "only the tracks flowing at the start are awaited": (
        [*FLOWED, W("b", 0), Start(1.5), End(2), S(2.5, {"a": 3})],
        [(2.5, MediaRestored(1.0))],
    ),
    "a track stalled at the start is not awaited, and its resumption during the episode is reported": (
        [
            *FLOWED,
            W("b", 0),
            S(2, {"a": 3}),
            Start(2.5),
            S(3, {"b": 1}),
            S(3.5, {"b": 2}),
            End(4),
            S(4.5, {"a": 4, "b": 2}),
        ],
        [(2, stalled("b")), (3.5, resumed("b", 3.5)), (4.5, MediaRestored(2.0))],
    ),
    "clocks restart at the end: a track still without media stalls stall_timeout after it": (
        [*FLOWED, Start(1.5), End(2), S(3.9, {"a": 2}), S(4, {"a": 2})],
        [(4, stalled("a"))],
    ),
    "a late stall is followed by its resumption and then media_restored": (
        [
            *FLOWED,
            W("b", 0),
            S(1, {"a": 2, "b": 1}),
            S(1.2, {"a": 3, "b": 2}),
            Start(1.5),
            End(2),
            S(2.5, {"a": 4, "b": 2}),
            S(4, {"a": 5, "b": 2}),
            M("b", "stalled"),
            S(5, {"a": 6, "b": 3}),
        ],
        [(4, stalled("b")), (5, resumed("b", 3.0)), (5, MediaRestored(3.5))],
    ),
    "a track stalled before the start stays stalled and reports its whole stall": (
        [*FLOWED, S(3, {"a": 2}), Start(4), End(5), S(6, {"a": 2}), S(7, {"a": 2}), S(8, {"a": 3})],
        [(3, stalled("a")), (5, MediaRestored(1.0)), (8, resumed("a", 7.0))],
    ),
    "an awaited track unwatched during the episode is no longer awaited": (
        [
            *FLOWED,
            W("b", 0),
            S(1.2, {"a": 3, "b": 1}),
            S(1.4, {"a": 4, "b": 2}),
            Start(1.5),
            U("b"),
            End(2),
            S(3, {"a": 5}),
        ],
        [(3, MediaRestored(1.5))],
    ),
    "unwatching the last awaited track completes the set at the next sample": (
        [
            *FLOWED,
            W("b", 0),
            S(1.2, {"a": 3, "b": 1}),
            S(1.4, {"a": 4, "b": 2}),
            Start(1.5),
            End(2),
            S(2.5, {"a": 5, "b": 2}),
            U("b"),
            S(3, {"a": 6}),
        ],
        [(3, MediaRestored(1.5))],
    ),
    "unwatching every awaited track before the end: media_restored at once": (
        [*FLOWED, Start(1.5), U("a"), End(2)],
        [(2, MediaRestored(0.5))],
    ),
    "a track watched during the episode is not awaited; its clock restarts at the end": (
        [*FLOWED, Start(1.5), W("b", 1.6), End(2), S(2.5, {"a": 3}), S(3.6, {"a": 4}), S(4, {"a": 5})],
        [(2.5, MediaRestored(1.0)), (4, stalled("b"))],
    ),
    # watch again, rename
    "watch of a watched sid restarts its clock": (
        [*FLOWED, W("a", 1.5), S(3, {"a": 2}), S(3.4, {"a": 2}), S(3.5, {"a": 2})],
        [(3.5, stalled("a"))],
    ),
    "watch of a stalled sid keeps it stalled": (
        [*FLOWED, S(3, {"a": 2}), W("a", 4), M("a", "stalled"), S(5, {"a": 3})],
        [(3, stalled("a")), (5, resumed("a", 4.0))],
    ),
    "watch of an awaited sid keeps it awaited": (
        [*FLOWED, Start(1.5), W("a", 1.7), End(2), S(2.5, {"a": 2}), S(3, {"a": 3})],
        [(3, MediaRestored(1.5))],
    ),
    "rename keeps the history: counters, stall": (
        [*FLOWED, S(3, {"a": 2}), R("a", "a2"), M("a", "unknown"), M("a2", "stalled"), S(4, {"a2": 3})],
        [(3, stalled("a")), (4, resumed("a2", 3.0))],
    ),
    "a renamed awaited track stays awaited under its new sid": (
        [
            *FLOWED,
            W("b", 0),
            S(1.2, {"a": 3, "b": 1}),
            S(1.4, {"a": 4, "b": 2}),
            Start(1.5),
            R("a", "a2"),
            End(2),
            S(2.5, {"a2": 4, "b": 3}),
            S(3, {"a2": 5, "b": 3}),
        ],
        [(3, MediaRestored(1.5))],
    ),
    "rename of an unknown sid does nothing": (
        [*FLOWED, R("x", "y"), M("y", "unknown"), S(3, {"a": 2})],
        [(3, stalled("a"))],
    ),
    "rename onto a watched sid replaces that watch": (
        [W("a", 0), W("b", 1), S(1, {"a": 1, "b": 1}), R("a", "b"), S(2, {"b": 1})],
        [(2, stalled("b"))],
    ),
}


@pytest.mark.parametrize(("steps", "expected"), CASES.values(), ids=CASES.keys())
def test_watch(steps: list[Step], expected: list[tuple[float, HealthOutput]]) -> None:
    assert run(steps) == expected


def test_outputs_are_values() -> None:
    assert stalled("a") == TrackStalled(identity="bob", sid="a", reason="no_packets")
    assert Counters(1, None) != Counters(1, 0)


# ---------------------------------------------------------------------------------------------------------------------
# The stats readers, on protobuf stats as livekit 1.2 gives them


def inbound(track_id: str, kind: str, payload: int, frames: int = 0) -> pb.RtcStats:
    entry = pb.RtcStats()
    entry.inbound_rtp.rtc.id = f"IT01{kind[0].upper()}{payload}"
    entry.inbound_rtp.stream.kind = kind
    entry.inbound_rtp.inbound.track_identifier = track_id
    entry.inbound_rtp.received.packets_received = payload // 100  # not read: padding makes packets lie
    entry.inbound_rtp.inbound.bytes_received = payload
    entry.inbound_rtp.inbound.frames_decoded = frames
    return entry


def outbound(source_id: str, kind: str, payload: int, frames: int = 0, rid: str = "") -> pb.RtcStats:
    entry = pb.RtcStats()
    entry.outbound_rtp.rtc.id = f"OT01{kind[0].upper()}{rid}{payload}"
    entry.outbound_rtp.stream.kind = kind
    entry.outbound_rtp.outbound.media_source_id = source_id
    entry.outbound_rtp.outbound.rid = rid
    entry.outbound_rtp.sent.packets_sent = payload * 3  # not read: padding makes packets lie
    entry.outbound_rtp.sent.bytes_sent = payload
    entry.outbound_rtp.outbound.frames_encoded = frames
    return entry


def source(source_id: str, track_id: str) -> pb.RtcStats:
    entry = pb.RtcStats()
    entry.media_source.rtc.id = source_id
    entry.media_source.source.track_identifier = track_id
    return entry


def other() -> pb.RtcStats:
    entry = pb.RtcStats()
    entry.transport.rtc.id = "T01"
    return entry


def test_counters_from_stats() -> None:
    stats = rtc.RtcStats(
        publisher_stats=[
            other(),
            inbound("remote-audio", "audio", 120),
            inbound("remote-video", "video", 50, 40),
            outbound("SA1", "audio", 140),
            source("SA1", "local-audio"),
            outbound("SV2", "video", 60, 42, rid="q"),
            outbound("SV2", "video", 30, 20, rid="h"),
            outbound("SV2", "video", 0, 0, rid="f"),
            source("SV2", "local-video"),
            outbound("SX", "audio", 5),  # no media source: no key
            inbound("", "audio", 9),  # no track id: no key
        ],
        subscriber_stats=[inbound("legacy-sub", "audio", 7)],  # two peer connections: the subscriber's
    )
    assert counters_from_stats(stats) == {
        "remote-audio": Counters(120, None),
        "remote-video": Counters(50, 40),
        "local-audio": Counters(140, None),
        "local-video": Counters(90, 62),
        "legacy-sub": Counters(7, None),
    }


def test_counters_from_stats_sums_entries_of_one_track() -> None:
    """Two inbound entries of one receiver (an old SSRC's stats that linger) add up; a kind mix gives no frames."""
    stats = rtc.RtcStats(
        publisher_stats=[inbound("r", "video", 10, 8), inbound("r", "video", 5, 4), inbound("m", "video", 3, 3)],
        subscriber_stats=[inbound("m", "audio", 2)],
    )
    assert counters_from_stats(stats) == {"r": Counters(15, 12), "m": Counters(5, None)}


def test_counters_from_empty_stats() -> None:
    assert counters_from_stats(rtc.RtcStats(publisher_stats=[], subscriber_stats=[])) == {}


@pytest.mark.parametrize(
    ("track_stats", "key"),
    [
        ([other(), inbound("remote", "audio", 3)], "remote"),
        ([other(), outbound("SV2", "video", 3, 3), source("SV2", "local")], "local"),
        ([other(), inbound("", "audio", 3), source("S", "")], None),
        ([other()], None),
        ([], None),
    ],
    ids=["remote", "local", "empty ids", "no rtp", "no stats"],
)
def test_stats_key(track_stats: list[pb.RtcStats], key: str | None) -> None:
    assert stats_key(track_stats) == key


# ---------------------------------------------------------------------------------------------------------------------
# The sampler, with a fake get_stats and fake tracks


class FakeTrack:
    def __init__(self, track_stats: list[pb.RtcStats] | Exception) -> None:
        self.track_stats = track_stats
        self.asked = 0

    async def get_stats(self) -> list[pb.RtcStats]:
        self.asked += 1
        if isinstance(self.track_stats, Exception):
            raise self.track_stats
        return self.track_stats


class FakeRoom:
    """get_stats gives the next of ``samples`` (an exception is raised, None never answers); the clock reads
    ``now``."""

    def __init__(self) -> None:
        self.samples: list[rtc.RtcStats | Exception | None] = []
        self.asked = asyncio.Event()
        self.calls = 0
        self.now = 0.0

    async def get_stats(self) -> rtc.RtcStats:
        self.calls += 1
        self.asked.set()
        sample = self.samples.pop(0) if self.samples else rtc.RtcStats(publisher_stats=[], subscriber_stats=[])
        if sample is None:
            await asyncio.Event().wait()
        if isinstance(sample, Exception):
            raise sample
        assert sample is not None
        return sample

    def clock(self) -> float:
        return self.now


def audio_in(track_id: str, payload: int) -> rtc.RtcStats:
    return rtc.RtcStats(publisher_stats=[inbound(track_id, "audio", payload)], subscriber_stats=[])


@dataclass
class Rig:
    room: FakeRoom
    watch: MediaWatch
    tracks: dict[str, StatsTrack]
    calls: list[list[HealthOutput]]
    """What on_outputs got, call by call."""
    tasks: Tasks
    sampler: Sampler

    @property
    def outputs(self) -> list[HealthOutput]:
        return [output for call in self.calls for output in call]


@pytest.fixture
async def rig() -> Rig:
    """A sampler reading every 0.05 s (a read that does not answer in 0.05 s is skipped; the fakes answer at once)."""
    room, watch = FakeRoom(), MediaWatch(TIMEOUT)
    calls: list[list[HealthOutput]] = []
    tracks: dict[str, StatsTrack] = {}
    tasks = Tasks("test", logging.getLogger("rtcstack"))
    sampler = Sampler(room.get_stats, lambda: tracks, watch, calls.append, tasks, interval=0.05, clock=room.clock)
    return Rig(room, watch, tracks, calls, tasks, sampler)


async def at(rig: Rig, now: float, sample: rtc.RtcStats | Exception | None) -> None:
    rig.room.now = now
    rig.room.samples.append(sample)
    await rig.sampler.sample_once()


async def test_sampler_feeds_the_watch_by_sid(rig: Rig) -> None:
    track = FakeTrack([inbound("uuid-a", "audio", 1)])
    rig.tracks["TR_a"] = track
    rig.watch.watch("TR_a", "bob", video=False, now=0)
    await at(rig, 0, audio_in("uuid-a", 10))
    await at(rig, 1, audio_in("uuid-a", 20))
    assert rig.watch.media("TR_a") == "flowing"
    await at(rig, 3, audio_in("uuid-a", 20))
    assert rig.outputs == [TrackStalled("bob", "TR_a", "no_packets")]
    await at(rig, 4, audio_in("uuid-a", 30))
    assert rig.outputs[1:] == [TrackResumed("bob", "TR_a", 3.0)]
    assert track.asked == 1  # the key was asked once and kept while the track is in the stats


async def test_sampler_asks_the_key_again_while_the_track_is_missing(rig: Rig) -> None:
    """A remote track has no stats before its first packet; a restart replaces its receiver (a new track id)."""
    track = FakeTrack([])
    rig.tracks["TR_a"] = track
    rig.watch.watch("TR_a", "bob", video=False, now=0)
    await at(rig, 0, audio_in("other", 1))
    await at(rig, 0.5, audio_in("other", 2))
    assert track.asked == 2
    track.track_stats = [inbound("uuid-a", "audio", 1)]
    await at(rig, 1, audio_in("uuid-a", 1))
    await at(rig, 1.5, audio_in("uuid-a", 2))
    assert (track.asked, rig.watch.media("TR_a")) == (3, "flowing")
    track.track_stats = [inbound("uuid-b", "audio", 1)]  # a new receiver: the old id is gone from the stats
    await at(rig, 2, audio_in("uuid-b", 1))
    await at(rig, 2.5, audio_in("uuid-b", 2))
    assert (track.asked, rig.watch.media("TR_a"), rig.outputs) == (4, "flowing", [])


async def test_sampler_asks_a_replaced_track_again(rig: Rig) -> None:
    rig.tracks["TR_a"] = first = FakeTrack([inbound("uuid-a", "audio", 1)])
    rig.watch.watch("TR_a", "bob", video=False, now=0)
    await at(rig, 0, audio_in("uuid-a", 1))
    rig.tracks["TR_a"] = second = FakeTrack([inbound("uuid-a", "audio", 1)])
    await at(rig, 0.5, audio_in("uuid-a", 2))
    assert (first.asked, second.asked) == (1, 1)


async def test_sampler_forgets_the_keys_of_tracks_no_longer_given(rig: Rig) -> None:
    track = FakeTrack([inbound("uuid-a", "audio", 1)])
    rig.tracks["TR_a"] = track
    await at(rig, 0, audio_in("uuid-a", 1))
    del rig.tracks["TR_a"]
    await at(rig, 0.5, audio_in("uuid-a", 2))
    rig.tracks["TR_a"] = track
    await at(rig, 1, audio_in("uuid-a", 3))
    assert track.asked == 2


async def test_a_failing_track_read_gives_no_key(rig: Rig) -> None:
    rig.tracks["TR_a"] = FakeTrack(RuntimeError("track gone"))
    rig.watch.watch("TR_a", "bob", video=False, now=0)
    await at(rig, 0, audio_in("uuid-a", 1))
    await at(rig, 2, audio_in("uuid-a", 2))
    assert rig.outputs == [TrackStalled("bob", "TR_a", "no_packets")]  # missing, as the rule says


async def test_failed_reads_are_skipped_and_logged_once_per_run(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """A get_stats that raises or does not answer within the interval is no sample: no stall counted from it."""
    caplog.set_level(logging.DEBUG, logger="rtcstack")
    rig.tracks["TR_a"] = FakeTrack([inbound("uuid-a", "audio", 1)])
    rig.watch.watch("TR_a", "bob", video=False, now=0)
    await at(rig, 0, audio_in("uuid-a", 1))
    await at(rig, 1, audio_in("uuid-a", 2))
    await at(rig, 5, RuntimeError("the room isn't connected"))
    await at(rig, 6, None)
    assert (rig.outputs, rig.watch.media("TR_a")) == ([], "flowing")
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert failures == ["media health: reading get_rtc_stats failed (RuntimeError: the room isn't connected); skipping"]
    assert "TOKEN" not in caplog.text
    await at(rig, 6.5, audio_in("uuid-a", 3))
    await at(rig, 7, RuntimeError("again"))
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 2


async def test_start_samples_every_interval_and_stop_ends_it(rig: Rig) -> None:
    rig.tracks["TR_a"] = FakeTrack([])
    rig.sampler.start()
    rig.sampler.start()  # once
    assert len(rig.tasks) == 1
    for _ in range(3):
        rig.room.asked.clear()
        await asyncio.wait_for(rig.room.asked.wait(), 5)
    await rig.sampler.stop()
    assert len(rig.tasks) == 0
    calls = rig.room.calls
    await rig.sampler.stop()  # idempotent
    rig.sampler.start()  # and it can start again
    rig.room.asked.clear()
    await asyncio.wait_for(rig.room.asked.wait(), 5)
    assert rig.room.calls > calls
    await rig.tasks.close()


async def test_outputs_of_a_sample_go_to_on_outputs_together(rig: Rig) -> None:
    rig.tracks.update(a=FakeTrack([]), b=FakeTrack([]))  # no stats yet: missing
    rig.watch.watch("a", "bob", video=False, now=0)
    rig.watch.watch("b", "carol", video=True, now=0)
    await at(rig, 1, None)  # no answer: skipped
    await at(rig, 2, rtc.RtcStats(publisher_stats=[], subscriber_stats=[]))
    await at(rig, 3, rtc.RtcStats(publisher_stats=[], subscriber_stats=[]))  # nothing new: on_outputs not called
    assert rig.calls == [[TrackStalled("bob", "a", "no_packets"), TrackStalled("carol", "b", "no_packets")]]


async def test_with_no_tracks_the_stats_are_not_read(rig: Rig) -> None:
    """The watch still gets its samples: an episode whose awaited tracks all went ends with MediaRestored."""
    rig.tracks["TR_a"] = FakeTrack([inbound("uuid-a", "audio", 1)])
    rig.watch.watch("TR_a", "bob", video=False, now=0)
    await at(rig, 0, audio_in("uuid-a", 1))
    await at(rig, 0.5, audio_in("uuid-a", 2))
    rig.watch.episode_started(1)
    assert rig.watch.episode_ended(2) == []  # TR_a is awaited
    del rig.tracks["TR_a"]
    rig.watch.unwatch("TR_a")
    await at(rig, 3, None)
    assert (rig.room.calls, rig.calls) == (2, [[MediaRestored(2.0)]])
