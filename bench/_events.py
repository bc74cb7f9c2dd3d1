"""Cost per event (a Room callback to one sync user handler), and the roster with 100 and 1,000 participants."""

from __future__ import annotations

import time
from collections.abc import Callable

from livekit import rtc

from rtcstack import Call, Participant, QualityName, create_call
from rtcstack.testing import LoopbackServer

from ._common import Bench, Context, log, order, wait_until
from ._report import Row, Target

__all__ = ["EVENTS", "ROSTER"]

ROSTER_SIZES = (100, 1000)
_QUALITIES = (rtc.ConnectionQuality.QUALITY_GOOD, rtc.ConnectionQuality.QUALITY_POOR)


class _Counter:
    """One sync handler per side, plain functions as an app would write them; counts their calls, so a batch
    can prove that every event reached its handler."""

    def __init__(self) -> None:
        self.hits = 0

        def on_rtcstack(participant: Participant, quality: QualityName) -> None:
            self.hits += 1

        def on_raw(participant: rtc.Participant, quality: int) -> None:
            self.hits += 1

        self.rtcstack = on_rtcstack
        self.raw = on_raw


def _emit_batch(room: rtc.Room, participant: rtc.Participant, count: int) -> float:
    """Microseconds per ``connection_quality_changed`` that ``room`` emits as its event loop would."""
    start = time.perf_counter()
    for i in range(count):
        room.emit("connection_quality_changed", participant, _QUALITIES[i & 1])
    return (time.perf_counter() - start) / count * 1e6


def _timed(action: Callable[[], object], count: int) -> float:
    """Microseconds per call of ``action``."""
    start = time.perf_counter()
    for _ in range(count):
        action()
    return (time.perf_counter() - start) / count * 1e6


def _quality_rounds(call: Call, raw: rtc.Room, identity: str, rounds: int, batch: int) -> dict[str, list[float]]:
    """Alternating batches of quality events about ``identity``, each side with one counting sync handler."""
    counter = _Counter()
    call.on("connection_quality_changed", counter.rtcstack)
    raw.on("connection_quality_changed", counter.raw)
    rooms = {"rtcstack": call.room, "raw": raw}
    samples: dict[str, list[float]] = {"rtcstack": [], "raw": []}
    try:
        for run in range(-1, rounds):  # round -1 warms up
            for side in order(run):
                room = rooms[side]
                before = counter.hits
                cost = _emit_batch(room, room.remote_participants[identity], batch)
                if counter.hits - before != batch:
                    raise RuntimeError(f"{side}: {counter.hits - before} of {batch} events reached the handler")
                if run >= 0:
                    samples[side].append(cost)
    finally:
        call.off("connection_quality_changed", counter.rtcstack)
        raw.off("connection_quality_changed", counter.raw)
    return samples


async def event_cost(ctx: Context) -> list[Row]:
    rounds, batch = ctx.runs(15, 3), ctx.runs(5000, 500)
    async with LoopbackServer() as server:
        call = create_call(server.url, server.token("alice", room="events"))
        raw, bob = rtc.Room(), rtc.Room()
        try:
            await call.connect()
            await raw.connect(server.url, server.token("carol", room="events"))
            await bob.connect(server.url, server.token("bob", room="events"))
            track = rtc.LocalAudioTrack.create_audio_track("mic", rtc.AudioSource(48000, 1))
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            await bob.local_participant.publish_track(track, options)
            await wait_until(
                lambda: (
                    any(p.identity == "bob" and len(p.tracks) == 1 for p in call.participants)
                    and "bob" in raw.remote_participants
                    and len(raw.remote_participants["bob"].track_publications) == 1
                ),
                15,
                "bob's track on both sides",
            )
            samples = _quality_rounds(call, raw, "bob", rounds, batch)
        finally:
            await call.disconnect()
            await raw.disconnect()
            await bob.disconnect()
    log(f"events: {rounds} rounds of {batch} events each")
    return [
        Row(
            "quality event → one sync handler (remote with 1 track)",
            "µs",
            samples["rtcstack"],
            samples["raw"],
            target=Target("added", 10),
        )
    ]


async def _roster_of(server: LoopbackServer, size: int, rounds: int, reads: int, events: int) -> list[Row]:
    room_name = f"roster-{size}"
    for i in range(size):
        await server.add_participant(room_name, f"p{i}", name=f"Person {i}", metadata="{}")
    call = create_call(server.url, server.token("alice", room=room_name))
    raw = rtc.Room()
    try:
        await call.connect()
        await raw.connect(server.url, server.token("carol", room=room_name))
        await wait_until(
            lambda: len(call.participants) >= size and len(raw.remote_participants) >= size + 1,
            30,
            f"{size} participants on both sides",
        )
        listing: dict[str, list[float]] = {"rtcstack": [], "raw": []}
        actions: dict[str, Callable[[], object]] = {
            "rtcstack": lambda: call.participants,
            "raw": lambda: list(raw.remote_participants.values()),
        }
        for run in range(-1, rounds):
            for side in order(run):
                cost = _timed(actions[side], reads)
                if run >= 0:
                    listing[side].append(cost)
        quality = _quality_rounds(call, raw, f"p{size // 2}", rounds, events)
    finally:
        await call.disconnect()
        await raw.disconnect()
    target = Target("value", 1000) if size == 1000 else None
    return [
        Row(f"`participants`, {size} in the room", "µs", listing["rtcstack"], listing["raw"], target=target),
        Row(f"one quality event, {size} in the room", "µs", quality["rtcstack"], quality["raw"]),
    ]


async def roster(ctx: Context) -> list[Row]:
    rounds, reads, events = ctx.runs(15, 3), ctx.runs(2000, 200), ctx.runs(2000, 200)
    rows: list[Row] = []
    async with LoopbackServer() as server:
        for size in ROSTER_SIZES:
            rows += await _roster_of(server, size, rounds, reads, events)
            log(f"roster: {size} participants, {rounds} rounds")
    return rows


EVENTS = Bench(
    "events",
    event_cost,
    [
        "**quality event → one sync handler**: the connected call's Room emits `connection_quality_changed` about a "
        "remote participant with one published audio track, as its event loop does; the time until one sync "
        "`call.on` handler has run, against one sync handler on a raw Room for the same event (both pay the SDK's "
        "own `emit`). 15 batches of 5,000 each, alternating; Δ is what the facade adds per event.",
    ],
)

ROSTER = Bench(
    "roster",
    roster,
    [
        "**`participants`, N in the room**: N synthetic participants (`server.add_participant`) before the call "
        "joins; the time of one `call.participants` against `list(room.remote_participants.values())`, and of one "
        "quality event about one of them (as above) with N in the room. 15 batches each, alternating.",
    ],
)
