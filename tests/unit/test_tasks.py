"""`Tasks` (tracked tasks of one owner) and `Later` (actions that wait a moment, by key), through their own methods."""

from __future__ import annotations

import asyncio
import logging

import pytest

from rtcstack._tasks import Later, Tasks

logger = logging.getLogger("rtcstack")


async def test_a_failed_task_is_logged_once_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Tasks("owner", logger)

    async def fails() -> None:
        raise RuntimeError("boom")

    tasks.spawn(fails(), "the job")
    await tasks.wait()
    [record] = [r for r in caplog.records if r.name == "rtcstack"]
    assert record.getMessage() == "owner: the job failed: RuntimeError: boom" and record.exc_info is not None
    assert len(tasks) == 0


async def test_a_scrubbed_failure_hides_the_secret_and_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Tasks("call", logger, scrub=lambda text: text.replace("s3cret", "<token>"))

    async def fails() -> None:
        raise RuntimeError("refused s3cret")

    tasks.spawn(fails(), "connect")
    await tasks.wait()
    [record] = [r for r in caplog.records if r.name == "rtcstack"]
    assert record.getMessage() == "call: connect failed: RuntimeError: refused <token>" and record.exc_info is None


async def test_wait_waits_for_the_tasks_that_tasks_spawn() -> None:
    tasks, done = Tasks("owner", logger), []

    async def child() -> None:
        await asyncio.sleep(0.01)
        done.append("child")

    async def parent() -> None:
        tasks.spawn(child(), "child")
        done.append("parent")

    tasks.spawn(parent(), "parent")
    await tasks.wait()
    assert done == ["parent", "child"] and len(tasks) == 0


async def test_close_lets_the_grace_run_then_cancels_and_abandons_the_stubborn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks, outcome, release = Tasks("owner", logger), [], asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0)
        outcome.append("quick")

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            await release.wait()

    tasks.spawn(quick(), "quick")
    stuck = tasks.spawn(stubborn(), "stubborn")
    await tasks.close(grace=0.05, bound=0.05)
    assert outcome == ["quick", "cancelled"] and len(tasks) == 0
    assert [r.levelno for r in caplog.records if r.name == "rtcstack"] == [logging.WARNING]
    release.set()
    await stuck


async def test_later_applies_once_and_a_new_schedule_replaces_the_old() -> None:
    later, applied = Later(), []
    later.schedule(("bob", "left"), 0.01, lambda: applied.append("first"))
    later.schedule(("bob", "left"), 0.02, lambda: applied.append("second"))
    assert ("bob", "left") in later and len(later) == 1
    due = later.due_in(("bob", "left"))
    assert due is not None and 0 < due <= 0.02
    await asyncio.sleep(0.05)
    assert applied == ["second"] and len(later) == 0 and later.due_in(("bob", "left")) is None


async def test_later_flush_applies_a_group_in_order_but_what_it_keeps() -> None:
    later, applied = Later(), []
    later.schedule(("bob", "a"), 10, lambda: applied.append("bob a"))
    later.schedule(("ann", "a"), 10, lambda: applied.append("ann a"))
    later.schedule(("bob", "b"), 10, lambda: applied.append("bob b"))
    later.schedule(("bob", "left"), 10, lambda: applied.append("bob left"))
    later.flush("bob", keep=lambda what: what == "left")
    assert applied == ["bob a", "bob b"] and ("bob", "left") in later and ("ann", "a") in later
    later.drop(lambda what: what != "left")
    assert ("ann", "a") not in later and ("bob", "left") in later
    later.drop()
    assert len(later) == 0
    later.cancel(("nobody", "x"))  # nothing waits there: nothing happens
