"""A LiveKit cluster (`LiveKitCluster`: livekit-server nodes sharing a redis-server, behind a round-robin front):
the call survives the death of the node that hosts its room, and the raw SDK in the same situation, side by side.

What a node's death looks like (livekit-server v1.13.5, measured with these tests and bench/_cluster.py): a client
whose signal went through the dead node loses it at once and resumes; the resume waits until the cluster counts the
node as gone (5 s after its last stats), gets leave(STATE_MISMATCH, RECONNECT), and the SDK's full restart joins the
room again, now on a live node (3-7 s after the kill). A client whose signal a live node relayed loses nothing but its
media until that node's relay gives up on a message it sends (8-12 s after the kill, by when the client joined), then
does the same. So the people of a room come back at their own pace, up to ~9 s apart; the call's `rejoin_grace` keeps
the ones not back yet in its roster meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import rtc

from rtcstack import Call, MediaStream, RtcstackError, create_call
from rtcstack.testing import LiveKitCluster
from tests.audio import level, tone
from tests.calls import within
from tests.processes import gone, processes_with, script

WAIT = 40.0
"""Bound for a call to come back after the kill (it takes up to ~12 s)."""
MIC = rtc.TrackSource.SOURCE_MICROPHONE
AUDIBLE = 1000.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LiveKitCluster]:
    async with LiveKitCluster(nodes=2, log_dir=tmp_path) as started:
        yield started


class Heard:
    """Reads a stream in the background: per frame, the track it came from and whether it carried the tone."""

    def __init__(self, stream: MediaStream[rtc.AudioFrameEvent]) -> None:
        self.stream = stream
        self.frames: list[tuple[Any, bool]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.stream:
            self.frames.append((self.stream.track, level([event.frame]) > AUDIBLE))
            self._changed.set()

    async def tone_from(self, what: str, exclude: Any = None) -> Any:
        """The track of the first audible frame from a track other than ``exclude``."""

        async def scan() -> Any:
            while True:
                for track, audible in self.frames:
                    if audible and track is not None and track is not exclude:
                        return track
                self._changed.clear()
                await self._changed.wait()

        return await within(what, scan(), WAIT)

    async def close(self) -> None:
        await self.stream.aclose()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def record(call: Call, log: list[tuple[str, str]]) -> None:
    for name in ("reconnecting", "reconnected", "participant_joined", "participant_left", "disconnected"):
        call.on(name, lambda *args, name=name: log.append((name, getattr(args[0], "identity", "") if args else "")))


async def test_calls_come_back_on_the_other_node_with_their_media_and_so_does_the_raw_sdk(
    cluster: LiveKitCluster,
) -> None:
    await cluster.create_room("calls", node=0)
    await cluster.create_room("raw", node=0)
    calls = {who: create_call(cluster.url, cluster.token(who, room="calls")) for who in ("alice", "bob")}
    logs: dict[str, list[tuple[str, str]]] = {who: [] for who in calls}
    rooms = {who: rtc.Room() for who in ("carol", "dave")}
    raw_back: dict[str, asyncio.Future[float]] = {who: asyncio.get_running_loop().create_future() for who in rooms}
    raw_left: dict[str, list[str]] = {who: [] for who in rooms}
    for who, room in rooms.items():
        room.once("reconnected", lambda who=who: raw_back[who].set_result(time.monotonic()))
        room.on("participant_disconnected", lambda p, who=who: raw_left[who].append(p.identity))
    heard: list[Heard] = []
    try:
        async with tone() as alice_tone, tone() as bob_tone, tone() as carol_tone, tone() as dave_tone:
            for who, call in calls.items():
                record(call, logs[who])
                await call.connect()
            for (who, room), track in zip(rooms.items(), (carol_tone, dave_tone), strict=True):
                await room.connect(cluster.url, cluster.token(who, room="raw"))
                await room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=MIC))
            first = {
                "alice": await calls["alice"].publish_track(alice_tone, rtc.TrackPublishOptions(source=MIC)),
                "bob": await calls["bob"].publish_track(bob_tone, rtc.TrackPublishOptions(source=MIC)),
            }
            of_bob, of_alice = Heard(calls["alice"].audio_stream("bob")), Heard(calls["bob"].audio_stream("alice"))
            heard += [of_bob, of_alice]
            before = {
                "bob": await of_bob.tone_from("alice hearing bob"),
                "alice": await of_alice.tone_from("bob hearing alice"),
            }
            assert await cluster.node_of("calls") == 0 and await cluster.node_of("raw") == 0

            seen = {who: len(log) for who, log in logs.items()}
            killed = time.monotonic()
            await cluster.kill_node(0)
            for who, call in calls.items():
                await within(f"{who} coming back", call.wait_for("reconnected", timeout=WAIT), WAIT + 1)
            # each call's stream of the other follows the track published again after the other came back
            await of_bob.tone_from("alice hearing bob's track published again", exclude=before["bob"])
            await of_alice.tone_from("bob hearing alice's track published again", exclude=before["alice"])
            raw = {who: await within(f"raw {who} coming back", raw_back[who], WAIT) - killed for who in rooms}

            assert await cluster.node_of("calls") == 1 and await cluster.node_of("raw") == 1
            for who, call in calls.items():
                after = logs[who][seen[who] :]
                names = [name for name, _ in after]
                assert names[-1] == "reconnected" and names.count("reconnected") == 1, (who, after)
                assert set(names) == {"reconnecting", "reconnected"}, (who, after)  # no one left or joined
                assert [p.identity for p in call.participants] == [other for other in calls if other != who]
                again = [pub.sid for pub in call.room.local_participant.track_publications.values()]
                assert len(again) == 1 and again[0] != first[who].sid, (who, again)
            for who, room in rooms.items():  # the raw SDK comes back too, by its own full restart, which
                # reports everyone else gone: an app on it sees the others leave and join again
                assert room.connection_state == rtc.ConnectionState.CONN_CONNECTED
                assert raw_left[who] == [other for other in rooms if other != who]
                print(f"raw {who}: reconnected {raw[who]:.1f} s after the kill")
    finally:
        for stream in heard:
            await stream.close()
        await asyncio.gather(*(call.disconnect() for call in calls.values()))
        await asyncio.gather(*(room.disconnect() for room in rooms.values()))


# -- LiveKitCluster itself ---------------------------------------------------------------------------------------


def test_no_redis_server_anywhere_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = os.environ.get("LIVEKIT_SERVER_BIN")  # found before PATH is emptied
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RtcstackError, match=r"redis_binary=.*\$REDIS_SERVER_BIN.*PATH.*apt-get install redis-server"):
        LiveKitCluster(binary=binary)


def test_no_livekit_server_anywhere_names_the_three_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIVEKIT_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RtcstackError, match=r"binary=.*\$LIVEKIT_SERVER_BIN.*PATH.*scripts/livekit-server"):
        LiveKitCluster()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="nodes must be a positive int"):
        LiveKitCluster(nodes=0)
    with pytest.raises(ValueError, match="api_secret"):
        LiveKitCluster(api_secret="short")


async def test_a_redis_server_that_exits_at_start_is_a_clear_error_and_nothing_is_left(tmp_path: Path) -> None:
    marker = f"rtcstack-redis-{os.getpid()}-{id(tmp_path)}"
    redis = script(tmp_path, name="redis-server", body=f'echo "{marker}: bad config" >&2; exit 2')
    cluster = LiveKitCluster(redis_binary=redis, log_dir=tmp_path)
    with pytest.raises(RtcstackError, match=rf"(?s)redis-server on port \d+ exited at start with status 2.*{marker}"):
        await cluster.start()
    assert cluster.live_nodes == [] and processes_with(marker) == []
    with pytest.raises(RuntimeError):
        cluster.url  # noqa: B018  (the front was closed too)


async def test_a_cancelled_start_leaves_no_process(tmp_path: Path) -> None:
    marker = f"rtcstack-cancelled-{os.getpid()}-{id(tmp_path)}"
    redis = script(tmp_path, name="redis-server", body=f'export MARK="{marker}"; exec sleep 600')
    starting = asyncio.ensure_future(LiveKitCluster(redis_binary=redis, log_dir=tmp_path).start())
    await asyncio.sleep(0.3)  # the process is up and being waited for
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert processes_with(marker) == []


async def test_close_leaves_no_process_and_the_front_sends_only_to_live_nodes(tmp_path: Path) -> None:
    cluster = LiveKitCluster(nodes=2, log_dir=tmp_path)
    await cluster.start()
    try:
        nodes = processes_with(cluster.api_secret)  # their config, with the keys, is in their environment
        assert len(nodes) == 2 and cluster.live_nodes == [0, 1]
        (redis,) = processes_with(f"redis-server {cluster.redis_address}")  # its title
        with pytest.raises(LookupError):
            await cluster.node_of("nowhere")
        with pytest.raises(ValueError, match="no node 2"):
            await cluster.kill_node(2)
        await cluster.kill_node(1)
        assert cluster.live_nodes == [0]
        statuses = []
        for _ in range(4):  # one connection each: none goes to the dead node (the front would answer 502)
            async with aiohttp.ClientSession() as http, http.get(cluster.http_url) as response:
                statuses.append(response.status)
        assert statuses == [200] * 4
        await cluster.create_room("demo", node=0)
        async with create_call(cluster.url, cluster.token("alice", room="demo")) as call:
            assert call.connection_state == "connected"
        url = cluster.url
    finally:
        await cluster.close()
    assert all(gone(pid) for pid in [*nodes, redis])
    room = rtc.Room()
    with pytest.raises(rtc.ConnectError):
        await room.connect(url, cluster.token("alice", room="demo"), rtc.RoomOptions(connect_timeout=2))
