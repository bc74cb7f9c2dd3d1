"""A node's death in a LiveKit cluster: from the SIGKILL of the node that hosts the room to `reconnected`, and to the
first frame of a followed stream, rtcstack against the raw Room side by side (their rooms on the same node)."""

from __future__ import annotations

import asyncio
import time

from livekit import rtc

from rtcstack import create_call
from rtcstack.testing import LiveKitCluster, audio_track

from ._common import Bench, Context, log, order
from ._media import MIC, Frames, _listen
from ._report import Row, Target

__all__ = ["CLUSTER"]

WAIT = 40.0


def _stamp(future: asyncio.Future[float]) -> None:
    if not future.done():
        future.set_result(time.perf_counter())


async def _run(sides: tuple[str, str]) -> dict[str, tuple[float, float]]:
    """One death: per side, seconds from the kill to `reconnected` and to the first audible frame followed from the
    publisher's track of after the kill. ``sides`` is the order they connect in: a client relayed by a live node
    notices the death when a message it sends after it finds the relay gone, so when it joined matters."""
    loop = asyncio.get_running_loop()
    async with LiveKitCluster(nodes=2) as cluster:
        await cluster.create_room("rtcstack", node=0)
        await cluster.create_room("raw", node=0)
        call = create_call(cluster.url, cluster.token("alice", room="rtcstack"))
        bob = rtc.Room()
        publishers = {"rtcstack": rtc.Room(), "raw": rtc.Room()}
        followed = {"rtcstack": Frames(), "raw": Frames()}
        back = {"rtcstack": loop.create_future(), "raw": loop.create_future()}
        tasks: set[asyncio.Task[None]] = set()
        _listen(bob, "caller", followed["raw"], tasks)
        call.on("reconnected", lambda: _stamp(back["rtcstack"]))
        bob.on("reconnected", lambda: _stamp(back["raw"]))
        try:
            async with audio_track("tone:440", name="mic") as first, audio_track("tone:440", name="mic") as second:
                # follower, publisher, follower, publisher: the front's round robin gives alice and bob the same
                # path to the room's node (through it, or relayed by the other), and both publishers the other one
                for side in sides:
                    if side == "rtcstack":
                        await call.connect()
                    else:
                        await bob.connect(cluster.url, cluster.token("bob", room="raw"))
                    await publishers[side].connect(cluster.url, cluster.token("caller", room=side))
                stream = call.audio_stream("caller")
                old: list[object] = [None]

                async def follow() -> None:
                    async for event in stream:  # frames of the track of before the kill are not counted
                        fresh = stream.track is not None and stream.track is not old[0]
                        followed["rtcstack"].add(event.frame, None if fresh else 0.0)

                reader = asyncio.create_task(follow())
                tasks.add(reader)
                for publisher, track in zip(publishers.values(), (first, second), strict=True):
                    await publisher.local_participant.publish_track(track, rtc.TrackPublishOptions(source=MIC))
                for side in followed:
                    await followed[side].first_after(0.0)
                old[0] = stream.track
                killed = time.perf_counter()
                await cluster.kill_node(0)
                return {
                    side: (
                        await asyncio.wait_for(back[side], WAIT) - killed,
                        await followed[side].first_after(killed) - killed,
                    )
                    for side in ("rtcstack", "raw")
                }
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await call.disconnect()
            await asyncio.gather(bob.disconnect(), *(p.disconnect() for p in publishers.values()))


async def node_death(ctx: Context) -> list[Row]:
    runs = ctx.runs(7, 1)
    samples: dict[str, dict[str, list[float]]] = {
        figure: {"rtcstack": [], "raw": []} for figure in ("reconnected", "frame")
    }
    for run in range(runs):
        result = await _run(order(run))
        for side, (reconnected, frame) in result.items():
            samples["reconnected"][side].append(reconnected * 1000)
            samples["frame"][side].append(frame * 1000)
        log(
            f"cluster run {run + 1}: "
            + "; ".join(f"{side} back {r:.1f} s, frame {f:.1f} s" for side, (r, f) in result.items())
        )
    ratio = Target("ratio", 1.1)
    return [
        Row(
            "node death → reconnected",
            "ms",
            samples["reconnected"]["rtcstack"],
            samples["reconnected"]["raw"],
            target=ratio,
        ),
        Row(
            "node death → first frame followed",
            "ms",
            samples["frame"]["rtcstack"],
            samples["frame"]["raw"],
            target=ratio,
        ),
    ]


CLUSTER = Bench(
    "cluster",
    node_death,
    [
        "**node death**: a `LiveKitCluster` of 2 livekit-server nodes (v1.13.5) sharing a redis-server, behind a round-"
        "robin front. Two rooms on node 0: in one a call follows a publisher's tone with `call.audio_stream`, in the "
        "other a raw Room does the same by hand (an `AudioStream` per `track_subscribed`); the publishers are raw "
        "Rooms. Node 0 is SIGKILLed; measured from the kill to the `reconnected` handler and to the first audible frame"
        " of the publisher's track of after the kill. The call and the raw Room take the same path through the front, "
        "and connect first in turn. A client whose signal went through the dead node resumes at once, waits until the "
        "cluster counts the node gone (5 s after its last stats) and is back 3-7 s after the kill by the SDK's full "
        "restart; one whose signal a live node relayed notices only when that relay gives up on a message it sends "
        "(8-12 s, by when it joined). The follower and its publisher come back each at its own pace, so the first frame"
        " waits for the later of the two. Fresh cluster per run, 7 runs.",
    ],
)
