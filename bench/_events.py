"""Cost per event (a Room callback to one sync user handler), and the roster with 100 and 1,000 participants."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, cast

from livekit import rtc

from rtcstack import Call, create_call
from rtcstack.testing import LoopbackServer

from ._common import Bench, Context, log, order, wait_until
from ._report import Row, Target

__all__ = ["EVENTS", "ROSTER"]

ROSTER_SIZES = (100, 1000)
_QUALITIES = (rtc.ConnectionQuality.QUALITY_GOOD, rtc.ConnectionQuality.QUALITY_POOR)


_Variants = tuple[tuple[object, ...], tuple[object, ...]]
_Event = Literal["connection_quality_changed", "active_speakers_changed"]


class _Counter:
    """One sync handler of the event's arity, a plain function as an app would write it, for either side; it
    counts its calls, so that a batch can prove every event reached it."""

    def __init__(self, arity: int) -> None:
        self.hits = 0

        def one(first: object) -> None:
            self.hits += 1

        def two(first: object, second: object) -> None:
            self.hits += 1

        self.handler: Callable[..., None] = two if arity == 2 else one


def _emit_batch(room: rtc.Room, event: _Event, variants: _Variants, count: int) -> float:
    """Microseconds per ``event`` that ``room`` emits as its event loop would, alternating two sets of arguments."""
    start = time.perf_counter()
    for i in range(count):
        room.emit(event, *variants[i & 1])
    return (time.perf_counter() - start) / count * 1e6


def _timed(action: Callable[[], object], count: int) -> float:
    """Microseconds per call of ``action``."""
    start = time.perf_counter()
    for _ in range(count):
        action()
    return (time.perf_counter() - start) / count * 1e6


def _quality_of(identity: str) -> Callable[[rtc.Room], _Variants]:
    def variants(room: rtc.Room) -> _Variants:
        participant = room.remote_participants[identity]
        return (participant, _QUALITIES[0]), (participant, _QUALITIES[1])

    return variants


def _speakers(first: list[str], second: list[str]) -> Callable[[rtc.Room], _Variants]:
    def variants(room: rtc.Room) -> _Variants:
        people = room.remote_participants
        return ([people[i] for i in first],), ([people[i] for i in second],)

    return variants


def _event_rounds(
    call: Call, raw: rtc.Room, event: _Event, variants: Callable[[rtc.Room], _Variants], rounds: int, batch: int
) -> dict[str, list[float]]:
    """Alternating batches of ``event`` on the call's Room and on a raw Room, each with one counting sync handler."""
    arity = len(variants(raw)[0])
    counter = _Counter(arity)
    subscribe = cast(Callable[[str, Callable[..., None]], object], call.on)
    subscribe(event, counter.handler)
    raw.on(event, counter.handler)
    rooms = {"rtcstack": call.room, "raw": raw}
    made = {side: variants(room) for side, room in rooms.items()}
    samples: dict[str, list[float]] = {"rtcstack": [], "raw": []}
    try:
        for run in range(-1, rounds):  # round -1 warms up
            for side in order(run):
                before = counter.hits
                cost = _emit_batch(rooms[side], event, made[side], batch)
                if counter.hits - before != batch:
                    raise RuntimeError(f"{side}: {counter.hits - before} of {batch} {event} reached the handler")
                if run >= 0:
                    samples[side].append(cost)
    finally:
        call.off(event, counter.handler)
        raw.off(event, counter.handler)
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
            samples = _event_rounds(call, raw, "connection_quality_changed", _quality_of("bob"), rounds, batch)
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
        quality = _event_rounds(call, raw, "connection_quality_changed", _quality_of(f"p{size // 2}"), rounds, events)
        speakers = _speakers(["p0", "p1", "p2"], ["p1", "p2", "p3"])
        speaking = _event_rounds(call, raw, "active_speakers_changed", speakers, rounds, events)
    finally:
        await call.disconnect()
        await raw.disconnect()
    target = Target("value", 1000) if size == 1000 else None
    return [
        Row(f"`participants`, {size} in the room", "µs", listing["rtcstack"], listing["raw"], target=target),
        Row(f"one quality event, {size} in the room", "µs", quality["rtcstack"], quality["raw"]),
        Row(f"active speakers event (3, 2 change), {size} in the room", "µs", speaking["rtcstack"], speaking["raw"]),
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
    loopback_only="the cost of an event inside the client; the server plays no part in it.",
)

ROSTER = Bench(
    "roster",
    roster,
    [
        "**`participants`, N in the room**: N synthetic participants (`server.add_participant`) before the call "
        "joins; the time of one `call.participants` against `list(room.remote_participants.values())`, of one "
        "quality event about one of them (as above), and of one `active_speakers_changed` whose 3 speakers "
        "alternate between p0-p2 and p1-p3 (2 change each time), with N in the room. 15 batches each, alternating.",
    ],
    loopback_only="its N participants are LoopbackServer's synthetic ones (`add_participant`).",
)
