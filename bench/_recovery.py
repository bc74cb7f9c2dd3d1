"""Recovery: a signal drop until `reconnected`, and an expired-token drop (rtcstack rejoins; a raw Room does not)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter

from livekit import rtc

from rtcstack import CallOptions, create_call
from rtcstack.testing import LoopbackServer

from ._common import Bench, Context, log, order
from ._report import Row, Target
from ._serve import in_process

__all__ = ["EXPIRED", "RESUME"]

WAIT = 30.0
TTL = 3.0
MARGIN = 1.0
WATCH = 3.0


def _stamp(future: asyncio.Future[float]) -> None:
    if not future.done():
        future.set_result(time.perf_counter())


async def signal_drop(ctx: Context) -> list[Row]:
    runs = ctx.runs(7, 1)
    samples: dict[str, list[float]] = {"rtcstack": [], "raw": []}
    loop = asyncio.get_running_loop()
    async with in_process(ctx.server) as server:
        call = create_call(server.url, server.token("alice", room="resume-rtcstack"))
        room = rtc.Room()
        await call.connect()
        await room.connect(server.url, server.token("bob", room="resume-raw"))
        try:
            for run in range(runs):
                for side in order(run):
                    back: asyncio.Future[float] = loop.create_future()
                    if side == "rtcstack":
                        call.once("reconnected", lambda back=back: _stamp(back))
                    else:
                        room.once("reconnected", lambda back=back: _stamp(back))
                    start = time.perf_counter()
                    await server.drop_signal("alice" if side == "rtcstack" else "bob")
                    samples[side].append((await asyncio.wait_for(back, WAIT) - start) * 1000)
                    await asyncio.sleep(0.5)
            if call.connection_state != "connected" or room.connection_state != rtc.ConnectionState.CONN_CONNECTED:
                raise RuntimeError("a client did not stay connected through the signal drops")
        finally:
            await call.disconnect()
            await room.disconnect()
    log(f"resume: {runs} runs each")
    return [
        Row("signal drop → reconnected", "ms", samples["rtcstack"], samples["raw"], target=Target("ratio", 1.02)),
    ]


async def _expire_rtcstack(server: LoopbackServer, run: int) -> float:
    """Seconds from the server's leave to `reconnected`, the call's first token having expired."""
    identity, room_name = f"alice-{run}", f"expired-rtcstack-{run}"
    call = create_call(
        server.url,
        server.token(identity, room=room_name, ttl=TTL),
        token_refresher=lambda: server.token(identity, room=room_name, ttl=600),
        options=CallOptions(token_refresh_margin=MARGIN),
    )
    first_expiry = call.token_expires_at.timestamp()
    try:
        await call.connect()
        await asyncio.sleep(max(0.0, first_expiry - time.time()) + 0.2)
        back: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        call.once("reconnected", lambda: _stamp(back))
        start = time.perf_counter()
        await server.leave(identity, reason="server_shutdown")
        return await asyncio.wait_for(back, WAIT) - start
    finally:
        await call.disconnect()


async def _expire_raw(server: LoopbackServer, run: int) -> tuple[float, str]:
    """Seconds from the server's leave to the raw Room's `disconnected`, and how it stands ``WATCH`` s later."""
    identity = f"bob-{run}"
    room = rtc.Room()
    ended: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    reasons: list[str] = []

    def on_disconnected(reason: rtc.DisconnectReason.ValueType) -> None:
        reasons.append(rtc.DisconnectReason.Name(reason))
        _stamp(ended)

    room.on("disconnected", on_disconnected)
    token = server.token(identity, room=f"expired-raw-{run}", ttl=TTL)
    started = time.time()
    try:
        await room.connect(server.url, token)
        await asyncio.sleep(max(0.0, started + TTL - time.time()) + 0.2)
        start = time.perf_counter()
        await server.leave(identity, reason="server_shutdown")
        elapsed = await asyncio.wait_for(ended, WAIT) - start
        await asyncio.sleep(WATCH)
        state = rtc.ConnectionState.Name(room.connection_state)
        return elapsed, f"disconnected({', '.join(reasons)}), {state} {WATCH:g} s later"
    finally:
        await room.disconnect()


async def expired_token(ctx: Context) -> list[Row]:
    runs = ctx.runs(5, 1)
    rejoin: list[float] = []
    ended: list[float] = []
    outcomes: Counter[str] = Counter()
    async with LoopbackServer(token_refresh=False) as server:
        for run in range(runs):
            for side in order(run):
                if side == "rtcstack":
                    rejoin.append(await _expire_rtcstack(server, run) * 1000)
                else:
                    elapsed, outcome = await _expire_raw(server, run)
                    ended.append(elapsed * 1000)
                    outcomes[outcome] += 1
    log(f"expired: {runs} runs each")
    told = "; ".join(f"{outcome} in {count}/{runs} runs" for outcome, count in outcomes.items())
    note = f"no recovery: {told} (the leave → disconnected: {statistics.median(ended):.0f} ms)"
    return [Row("expired token, server leave → reconnected", "ms", rejoin, raw_note=note)]


RESUME = Bench(
    "resume",
    signal_drop,
    [
        "**signal drop → reconnected**: `server.drop_signal()` aborts the signal socket; the time until the call's "
        "`reconnected` handler runs, against the raw Room's `reconnected` handler (the SDK's own resume, ~3 s of it "
        "a wait inside the SDK). One call and one Room, 7 drops each, alternating.",
    ],
    [
        "**signal drop → reconnected**: `LiveKitServer.drop_signal()` aborts the client's connection at the signal "
        "proxy in front of livekit-server (the server sees it end); the time until the call's `reconnected` handler "
        "runs, against the raw Room's `reconnected` handler (the SDK's own resume, through the proxy, ~3 s of it a "
        "wait inside the SDK). One call and one Room, 7 drops each, alternating.",
    ],
)

EXPIRED = Bench(
    "expired",
    expired_token,
    [
        f"**expired token**: `LoopbackServer(token_refresh=False)`, a {TTL:g} s token; the call has a "
        f"`token_refresher` and `token_refresh_margin={MARGIN:g}` (default `ReconnectPolicy`: first rejoin after "
        "0 to 0.5 s of jitter). Once the first token has expired the server sends `leave(server_shutdown)`: the call "
        "rejoins with its refreshed token. The raw Room with the same kind of token ends `disconnected` and stays so "
        "(its own token has expired, so an app could not simply connect it again). Fresh call / Room per run, 5 "
        "each, alternating.",
    ],
    loopback_only=(
        "as built it needs a server that sends `leave(server_shutdown)` once a token has expired and "
        "pushes no refreshed token (`LoopbackServer(token_refresh=False)`); livekit-server's RoomService "
        "removal is not a transient leave."
    ),
)
