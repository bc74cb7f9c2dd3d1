"""Helpers for the integration tests of `Call`: bounded waits that say what did not happen."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from rtcstack import Call, CallEvent

WAIT = 15.0
"""Upper bound for any single expected event (never reached when things work)."""

_T = TypeVar("_T")

CallFactory = Callable[..., Call]
"""The `make_call` fixture: ``make_call("alice", room="demo", ttl=600, **create_call_kwargs)``."""


def expect(call: Call, name: Any) -> asyncio.Future[CallEvent]:
    """Start waiting for the next `name` event now, before the action that causes it (bounded by WAIT)."""
    return asyncio.ensure_future(call.wait_for(name, timeout=WAIT))


async def within(what: str, awaitable: Awaitable[_T], timeout: float = WAIT) -> _T:
    """Await `awaitable`, failing with "`what` did not happen" after `timeout` seconds."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"{what} did not happen within {timeout:g} s")


async def until(predicate: Callable[[], bool], what: str = "", timeout: float = WAIT) -> None:
    """Poll `predicate` (server-side state and snapshots have no event to wait on) until it holds."""

    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110  (server-side state has no event to wait on)
            await asyncio.sleep(0.02)

    await within(what or f"the condition of line {predicate.__code__.co_firstlineno}", poll(), timeout)


_trips = itertools.count()


async def round_trip(sender: Call, receiver: Call) -> None:
    """`sender` changes its metadata and `receiver` sees it: a signal round trip through the server (either kind),
    so whatever the server sent `receiver` before has been handled by then."""
    assert sender.local_participant is not None
    identity, metadata = sender.local_participant.identity, f"round trip {next(_trips)}"

    def seen() -> bool:
        return any(p.identity == identity and p.metadata == metadata for p in receiver.participants)

    await sender.room.local_participant.set_metadata(metadata)
    await until(seen, f"{identity}'s metadata {metadata!r} reaching the other call")
