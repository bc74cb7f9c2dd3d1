"""Nothing is left behind: connect/disconnect cycles and connects cancelled or timed out at random points bring
tasks, threads, fds and livekit FFI handles back to their baseline (bench/leaks.py does the work; `scripts/leaks`
runs it with the full counts and prints the figures)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from bench import leaks
from rtcstack.testing import LoopbackServer
from rtcstack.testing._negotiation import Negotiation
from rtcstack.testing._session import Session

WAIT = 15.0


@pytest.mark.timeout(90)
async def test_cycles_and_interrupted_connects_leave_nothing_behind(server: LoopbackServer) -> None:
    report = await leaks.run(server, cycles=10, cancels=10, seed=7)
    assert report.problems == [], leaks.render(report)


async def test_a_baseline_that_never_settles_fails_the_check(server: LoopbackServer) -> None:
    await server.add_participant(leaks.ROOM, "never-leaves")  # the baseline waits for an empty room
    figures, settled = await leaks.quiet(server, timeout=0.5)
    assert not settled
    report = leaks.Report(baseline=figures, after=figures, cycles=0, cancels=0, baseline_settled=settled)
    assert report.problems == ["the baseline never settled"] and "never settled" in leaks.render(report)


async def test_a_session_replaced_while_joining_leaves_no_refresher_and_no_peer(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same identity joins again while the server is still making the first join's offer: the first session
    is closed then, and what its join makes afterwards (the peer connection, the periodic token refresh) must be
    closed too, or nobody ever stops it."""
    gate, offered = asyncio.Event(), asyncio.Event()
    negotiations: list[Negotiation] = []
    offer: Callable[[Negotiation], Awaitable[None]] = Negotiation.offer_subscriber

    async def first_offer_waits(negotiation: Negotiation) -> None:
        negotiations.append(negotiation)
        if len(negotiations) == 1:
            await gate.wait()
        await offer(negotiation)
        if negotiation is negotiations[0]:
            offered.set()  # the join goes on from here in this same step: the test wakes after it

    monkeypatch.setattr(Negotiation, "offer_subscriber", first_offer_waits)
    sessions: list[Session] = []
    join = Session.join

    async def recorded(session: Session, *args: Any) -> None:
        sessions.append(session)
        await join(session, *args)

    monkeypatch.setattr(Session, "join", recorded)
    url = f"{server.url}/rtc?sdk=python&protocol=16"  # legacy mode: the server offers, with no SDP from us
    headers = {"Authorization": f"Bearer {server.token('alice', room='demo')}"}
    async with aiohttp.ClientSession() as http:
        first = await http.ws_connect(url, headers=headers)
        for _ in range(500):  # the server's side of the join has no event to wait on
            if negotiations:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the first join did not reach the server's offer within 5 s")
        second = await http.ws_connect(url, headers=headers)
        await second.receive_bytes(timeout=WAIT)  # its JoinResponse: the first session is closed by now
        first_session = next(s for s in sessions if s.negotiation is negotiations[0])
        assert first_session.closed
        gate.set()
        try:
            await asyncio.wait_for(offered.wait(), WAIT)
        except asyncio.TimeoutError:
            pytest.fail(f"the replaced session's join did not finish its offer within {WAIT} s")
        await first_session.aclose()
        assert len([t for t in asyncio.all_tasks() if "_refresh_periodically" in repr(t.get_coro())]) == 1
        subscriber = negotiations[0].subscriber
        assert subscriber is not None and subscriber.connection_state == "closed"
        await first.close()
        await second.close()
