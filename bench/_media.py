"""Media after a rejoin: `reconnected` to the first frame a followed stream yields, and to the first frame another
client hears of the track published again; against the raw Room's own full restart (which republishes itself).

Against LoopbackServer the caller is synthetic and the faults are its leaves; against livekit-server the caller is a
Room and the faults come from the signal proxy (`_caller`, `_rejoin`, `_restart`)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

from livekit import rtc

from rtcstack import CallOptions, ReconnectPolicy, create_call
from rtcstack.testing import LoopbackServer, audio_track

from ._common import Bench, Context, log, order
from ._report import Row, Target
from ._serve import AnyServer, in_process

__all__ = ["MEDIA"]

WAIT = 30.0
RUNS = 15
"""Runs of each side: a rejoin's figures spread by hundreds of ms on a busy machine."""
MIC = rtc.TrackSource.SOURCE_MICROPHONE
POLICY = ReconnectPolicy(initial_delay=0.0, max_delay=0.0)
"""Rejoin at once: the figure is the media's recovery, not the backoff's jitter."""


AUDIBLE = 1000.0
"""RMS above which a frame carries the tone: a receiver's jitter buffer makes silent frames while no packet comes."""


class Frames:
    """Audible frames readers got, each with when it came and when its reader's stream was opened; `first_after(t)`
    waits for the first one that came from a stream opened after `t` (the track of before may still drip)."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, float]] = []
        self._changed = asyncio.Event()

    def add(self, frame: rtc.AudioFrame, opened: float | None = None) -> None:
        samples = frame.data
        if math.sqrt(sum(s * s for s in samples) / max(1, len(samples))) > AUDIBLE:
            now = time.perf_counter()
            self.frames.append((now, now if opened is None else opened))
            self._changed.set()

    async def first_after(self, start: float) -> float:
        async def scan() -> float:
            while True:
                later = [at for at, opened in self.frames if opened > start]
                if later:
                    return later[0]
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), WAIT)


@contextlib.asynccontextmanager
async def _caller(server: AnyServer, room_name: str) -> AsyncIterator[None]:
    """A participant "caller" in ``room_name`` publishing a tone: synthetic on LoopbackServer, else a Room."""
    if isinstance(server, LoopbackServer):
        await server.add_participant(room_name, "caller", audio="tone:440")
        try:
            yield
        finally:
            await server.remove_participant(room_name, "caller")
        return
    room = rtc.Room()
    try:
        async with audio_track("tone:440", name="mic") as track:
            await room.connect(server.url, server.token("caller", room=room_name))
            await room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=MIC))
            yield
    finally:
        await room.disconnect()


async def _rejoin(server: AnyServer, identity: str) -> None:
    """Make the call rejoin with a fresh Room: the server's leave(server_shutdown); on livekit-server the signal cut
    with the SDK's resume and full restart refused with 401 (then its validate too), so that it gives up at once."""
    if isinstance(server, LoopbackServer):
        await server.leave(identity, reason="server_shutdown")
    else:
        server.refuse_joins(count=2, status=401, identity=identity)
        await server.drop_signal(identity)


async def _restart(server: AnyServer, identity: str) -> None:
    """Make the raw SDK restart in full: the server's leave(action=reconnect); on livekit-server the signal cut with
    the SDK's resume refused with 401 (its full restart then gets in)."""
    if isinstance(server, LoopbackServer):
        await server.leave(identity, action="reconnect")
    else:
        server.refuse_joins(count=1, status=401, identity=identity)
        await server.drop_signal(identity)


def _listen(room: rtc.Room, identity: str, frames: Frames, tasks: set[asyncio.Task[None]]) -> None:
    """What an app on the raw SDK does: read every audio track of `identity` it gets subscribed to."""

    async def read(track: rtc.Track) -> None:
        opened = time.perf_counter()
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
        try:
            async for event in stream:
                frames.add(event.frame, opened)
        finally:
            await stream.aclose()

    def subscribed(track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == identity and track.kind == rtc.TrackKind.KIND_AUDIO:
            task = asyncio.create_task(read(track))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    room.on("track_subscribed", subscribed)


async def _facade_run(server: AnyServer, run: int) -> tuple[float, float, float, float]:
    room_name = f"media-rtcstack-{run}"
    call = create_call(server.url, server.token("alice", room=room_name), options=CallOptions(reconnect=POLICY))
    ear = rtc.Room()
    heard, followed = Frames(), Frames()
    tasks: set[asyncio.Task[None]] = set()
    _listen(ear, "alice", heard, tasks)
    try:
        async with _caller(server, room_name), audio_track("tone:440", name="mic") as track:
            await call.connect()
            await ear.connect(server.url, server.token("ear", room=room_name))
            await call.publish_track(track, rtc.TrackPublishOptions(source=MIC))
            stream = call.audio_stream("caller")

            old_track: list[object] = [None]

            async def follow() -> None:
                async for event in stream:  # frames read while no track of after the fault is attached are old
                    fresh = stream.track is not None and stream.track is not old_track[0]
                    followed.add(event.frame, None if fresh else 0.0)

            reader = asyncio.create_task(follow())
            tasks.add(reader)
            await heard.first_after(0.0)
            await followed.first_after(0.0)
            old_track[0] = stream.track
            back: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            call.once("reconnected", lambda: back.set_result(time.perf_counter()))
            fault = time.perf_counter()
            await _rejoin(server, "alice")
            return (
                fault,
                await asyncio.wait_for(back, WAIT),
                await followed.first_after(fault),
                await heard.first_after(fault),
            )
    finally:
        await call.disconnect()
        await ear.disconnect()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _raw_run(server: AnyServer, run: int) -> tuple[float, float, float, float]:
    room_name = f"media-raw-{run}"
    bob, ear = rtc.Room(), rtc.Room()
    heard, followed = Frames(), Frames()
    tasks: set[asyncio.Task[None]] = set()
    _listen(ear, "bob", heard, tasks)
    _listen(bob, "caller", followed, tasks)
    try:
        async with _caller(server, room_name), audio_track("tone:440", name="mic") as track:
            await bob.connect(server.url, server.token("bob", room=room_name))
            await ear.connect(server.url, server.token("ear", room=room_name))
            await bob.local_participant.publish_track(track, rtc.TrackPublishOptions(source=MIC))
            await heard.first_after(0.0)
            await followed.first_after(0.0)
            back: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            bob.once("reconnected", lambda: back.set_result(time.perf_counter()))
            fault = time.perf_counter()
            await _restart(server, "bob")
            return (
                fault,
                await asyncio.wait_for(back, WAIT),
                await followed.first_after(fault),
                await heard.first_after(fault),
            )
    finally:
        await bob.disconnect()
        await ear.disconnect()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def media_recovery(ctx: Context) -> list[Row]:
    runs = ctx.runs(RUNS, 1)
    figures: dict[str, dict[str, list[float]]] = {
        name: {"rtcstack": [], "raw": []} for name in ("fault-follow", "fault-hear", "back-follow", "back-hear")
    }
    async with in_process(ctx.server) as server:
        for run in range(runs):
            for side in order(run):
                measure = _facade_run if side == "rtcstack" else _raw_run
                fault, back, followed, heard = await measure(server, run)
                for name, value in (
                    ("fault-follow", followed - fault),
                    ("fault-hear", heard - fault),
                    ("back-follow", followed - back),
                    ("back-hear", heard - back),
                ):
                    figures[name][side].append(value * 1000)
    log(f"media: {runs} runs each")
    ratio = Target("ratio", 1.1)
    return [
        Row(
            "fault → first frame followed",
            "ms",
            figures["fault-follow"]["rtcstack"],
            figures["fault-follow"]["raw"],
            target=ratio,
        ),
        Row(
            "fault → other side hears the republished track",
            "ms",
            figures["fault-hear"]["rtcstack"],
            figures["fault-hear"]["raw"],
            target=ratio,
        ),
        Row(
            "reconnected → first frame followed",
            "ms",
            figures["back-follow"]["rtcstack"],
            figures["back-follow"]["raw"],
            ratio=False,
        ),
        Row(
            "reconnected → other side hears",
            "ms",
            figures["back-hear"]["rtcstack"],
            figures["back-hear"]["raw"],
            ratio=False,
        ),
    ]


_MEASURED = (
    "the call follows the caller with `call.audio_stream` and publishes its own tone with `call.publish_track`, "
    "which a listener reads. Measured from the fault, and from the `reconnected` handler, to the first audible frame "
    f"(RMS > {AUDIBLE:g}: a jitter buffer makes silent ones meanwhile) of the track of after the fault in the "
    "followed stream, and in the listener's. The raw Room does the same by hand (an `AudioStream` per "
    "`track_subscribed`) through its own full restart, which republishes by itself and subscribes again before its "
    "`reconnected` (so its figures from `reconnected` can be negative; the ratio is taken from the fault). Fresh "
    f"rooms per run, {RUNS} each, alternating."
)

MEDIA = Bench(
    "media",
    media_recovery,
    [
        "**rejoin → media**: a synthetic caller publishes a tone; " + _MEASURED + " The faults: "
        "`leave(server_shutdown)` makes the call rejoin with a fresh Room (policy without delay); "
        "`leave(action=reconnect)` makes the raw Room restart in full.",
    ],
    [
        "**rejoin → media**: the caller is a Room publishing a tone (livekit-server has no synthetic participants); "
        + _MEASURED
        + " The faults come from the signal proxy. rtcstack: the proxy refuses the call's next 2 signal connects "
        "with 401 (and its validate after them) and cuts its signal; the SDK's resume is refused, ~0.1 s later its "
        "full restart too, and it gives up (`JOIN_FAILURE`, ~0.15 s after the fault); the call rejoins at once "
        "(policy without delay) with a fresh Room, which republishes the call's track and subscribes to the caller. "
        "Raw Room: the proxy refuses 1 connect with 401 and cuts the signal; the resume is refused and ~0.1 s later "
        "the SDK's own full restart gets in, in the same Room. So the rtcstack side goes through one refused connect "
        "more, and a Room of its own: that is what the call's rejoin costs against the SDK's restart.",
    ],
)
