"""The token keeper through its own methods: the token in use, the expiry timer, the refresher's asks and the
tokens the server pushes. No Room, no network; the clock is the test's."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from rtcstack import CallOptions, TokenExpiredError
from rtcstack._keeper import TokenKeeper
from rtcstack._tasks import Tasks
from rtcstack._tokens import Refresher, decode_token
from tests.fakes import mint


class Clock:
    """A clock the test moves; starts now."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def make_keeper(
    token: str, refresher: Refresher | None, clock: Clock, events: list[tuple[str, Any]], **options: Any
) -> tuple[TokenKeeper, Tasks]:
    tasks = Tasks("keeper", logging.getLogger("rtcstack"))
    keeper = TokenKeeper(
        token,
        decode_token(token),
        refresher,
        CallOptions(**options),
        clock=clock,
        tasks=tasks,
        emit=lambda name, *args: events.append((name, *args)),
    )
    return keeper, tasks


def gated(calls: list[int], gate: asyncio.Event, token: str) -> Refresher:
    async def slow() -> str:
        calls.append(1)
        await gate.wait()
        return token

    return slow


async def test_a_join_while_the_timer_refreshes_waits_for_that_same_refresh() -> None:
    """The token enters its margin (the timer starts a refresh) and the call must join while the refresher is still
    working: the join waits for that same refresh and joins with its token."""
    clock, gate, calls, events = Clock(), asyncio.Event(), [], []
    fresh = mint(ttl=900)
    keeper, tasks = make_keeper(mint(ttl=120), gated(calls, gate, fresh), clock, events, token_refresh_margin=60)
    keeper.start()
    clock.now += timedelta(seconds=61)
    keeper.due()
    joining = asyncio.ensure_future(keeper.for_join())
    await asyncio.sleep(0.01)
    assert calls == [1] and not joining.done()
    gate.set()
    assert await asyncio.wait_for(joining, 5) == fresh
    assert calls == [1] and [e[0] for e in events] == ["token_expired", "token_refreshed"]
    keeper.stop()
    await tasks.wait()


async def test_the_timer_firing_twice_asks_the_refresher_once() -> None:
    clock, gate, calls, events = Clock(), asyncio.Event(), [], []
    keeper, tasks = make_keeper(mint(ttl=120), gated(calls, gate, mint(ttl=900)), clock, events)
    keeper.start()
    clock.now += timedelta(seconds=61)
    keeper.due()
    await asyncio.sleep(0.01)
    keeper.due()
    await asyncio.sleep(0.01)
    gate.set()
    await tasks.wait()
    assert calls == [1] and [e[0] for e in events] == ["token_expired", "token_refreshed"]
    keeper.stop()


async def test_a_pushed_token_during_a_refresh_ends_it_quietly() -> None:
    """LiveKit pushes a fresher token while the app's refresher is still working; the app's answer then expires
    earlier than the token in use. Nothing failed: no `token_refresh_failed`, no second ask."""
    clock, gate, calls, events = Clock(), asyncio.Event(), [], []
    keeper, tasks = make_keeper(mint(ttl=120), gated(calls, gate, mint(ttl=600)), clock, events)
    keeper.start()
    clock.now += timedelta(seconds=61)
    keeper.due()
    await asyncio.sleep(0.01)
    pushed = mint(ttl=3600)
    keeper.pushed(pushed)
    gate.set()
    await tasks.wait()
    assert [e[0] for e in events] == ["token_expired", "token_refreshed"] and calls == [1]
    assert keeper.token == pushed and not keeper.refreshing
    keeper.stop()


@pytest.mark.parametrize("pushed", [None, 42, "not-a-jwt", "other-identity"])
async def test_a_pushed_token_that_cannot_replace_ours_is_ignored(pushed: object) -> None:
    events: list[tuple[str, Any]] = []
    token = mint(ttl=600)
    keeper, _ = make_keeper(token, None, Clock(), events)
    keeper.pushed(mint(identity="mallory", ttl=3600) if pushed == "other-identity" else pushed)
    assert keeper.token == token and events == []


async def test_the_timer_is_due_at_the_margin_and_follows_each_new_token() -> None:
    clock, events = Clock(), []
    keeper, _ = make_keeper(mint(ttl=600), None, clock, events, token_refresh_margin=60)
    assert keeper.due_in() is None  # not live yet
    keeper.start()
    left = (keeper.claims.expires_at - clock.now).total_seconds()
    assert keeper.due_in() == pytest.approx(left - 60, abs=0.1)
    keeper.pushed(mint(ttl=1200))
    left = (keeper.claims.expires_at - clock.now).total_seconds()
    assert keeper.due_in() == pytest.approx(left - 60, abs=0.1)
    keeper.stop()
    assert keeper.due_in() is None
    keeper.pushed(mint(ttl=1800))  # adopted, but the call is over: no timer
    assert keeper.due_in() is None and [e[0] for e in events] == ["token_refreshed", "token_refreshed"]


async def test_a_token_shorter_than_the_margin_is_due_halfway_through_what_is_left() -> None:
    """So a refresher that hands out such tokens is not called in a tight loop."""
    clock, events = Clock(), []
    keeper, _ = make_keeper(mint(ttl=10), None, clock, events, token_refresh_margin=60)
    keeper.start()
    half = (keeper.claims.expires_at - clock.now).total_seconds() / 2
    assert keeper.due_in() == pytest.approx(half, abs=0.1)
    keeper.stop()


async def test_a_failing_refresher_is_asked_once_by_a_join_and_retried_in_the_background() -> None:
    clock, calls, events = Clock(), [], []

    def refuses() -> str:
        calls.append(1)
        return mint(identity="mallory")  # refused: another identity

    token = mint(ttl=30)
    keeper, tasks = make_keeper(token, refuses, clock, events)
    assert await asyncio.wait_for(keeper.for_join(), 5) == token  # still valid: joins with it
    assert calls == [1] and keeper.refreshing
    assert [e[0] for e in events] == ["token_expired", "token_refresh_failed"]
    keeper.stop()
    await tasks.wait()
    assert not keeper.refreshing


async def test_an_expired_token_with_no_refresher_cannot_join() -> None:
    clock, events = Clock(), []
    keeper, _ = make_keeper(mint(ttl=30), None, clock, events)
    clock.now += timedelta(seconds=31)
    with pytest.raises(TokenExpiredError):
        await keeper.for_join()
    assert keeper.expired() and [e[0] for e in events] == ["token_expired"]


def test_scrub_hides_the_token_in_use() -> None:
    token = mint()
    keeper, _ = make_keeper(token, None, Clock(), [])
    assert keeper.scrub(f"failed with {token}!") == "failed with <token>!"
