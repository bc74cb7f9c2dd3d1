"""For the whole suite: hypothesis runs the same examples every time, and a task that dies with an exception nobody
retrieves fails the test that made it.

Hypothesis is derandomized (its examples come from a hash of each test, not a fresh seed) and keeps no example
database, so a run on a fresh clone tests what a run here does; an input that once failed is an ``@example``.

asyncio reports such a task only when it is garbage-collected ("Task exception was never retrieved"), which may be
tests later, and only as a log line. Every event loop the tests make (pytest-asyncio's, ``asyncio.run``'s, a test's
own ``new_event_loop()``) is made here with a task factory that notes the test running when each task is created,
and an exception handler that collects the tasks collected as garbage with their exception unretrieved. After each
test's teardown (its loop closed, so nothing can retrieve them any more), the tasks it made that ended with an
exception nobody retrieved fail that teardown, with the ones collected meanwhile, each named with the test that
made it. No ``gc.collect()`` is needed for that (one per test made the unit tests five times slower).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import settings

_LOST = "exception was never retrieved"

settings.register_profile("rtcstack", derandomize=True, database=None)
settings.load_profile("rtcstack")


class _Task(asyncio.Task):  # type: ignore[type-arg]  # asyncio.Task is generic only to type checkers
    """A task that knows which test created it."""

    made_by = "(no test: made at collection or between tests)"


@dataclass(frozen=True)
class _Lost:
    made_by: str
    task: str
    error: str


_running: list[str] = []
_lost: list[_Lost] = []
_made: weakref.WeakSet[_Task] = weakref.WeakSet()


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> _Task:
    task = _Task(coro, loop=loop, **kwargs)
    if _running:
        task.made_by = _running[-1]
    _made.add(task)
    return task


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    task = context.get("future")
    if isinstance(task, asyncio.Task) and _LOST in str(context.get("message", "")):
        error = context.get("exception")
        shown = f"{type(error).__name__}: {error}" if error is not None else str(context.get("message"))
        _lost.append(_Lost(getattr(task, "made_by", "(a task not made by a test's loop)"), repr(task), shown))
        return
    loop.default_exception_handler(context)


def _instrument(policy: asyncio.AbstractEventLoopPolicy) -> None:
    make = policy.new_event_loop

    def new_event_loop() -> asyncio.AbstractEventLoop:
        loop = make()
        loop.set_task_factory(_task_factory)  # type: ignore[arg-type]  # returns a Task subclass, as allowed
        loop.set_exception_handler(_exception_handler)
        return loop

    policy.new_event_loop = new_event_loop  # type: ignore[method-assign]  # on this policy instance only


def pytest_configure(config: pytest.Config) -> None:
    _instrument(asyncio.get_event_loop_policy())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    _running.append(item.nodeid)
    try:
        return (yield)
    finally:
        _running.pop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    try:
        yield
    finally:
        lost, _lost[:] = list(_lost), []
        for task in list(_made):
            # `_log_traceback`: asyncio's own flag for "an exception nobody retrieved", which it logs at collection
            if task.done() and not task.cancelled() and task._log_traceback:
                error = task.exception()  # retrieved: asyncio will not report it again
                lost.append(_Lost(task.made_by, repr(task), f"{type(error).__name__}: {error}"))
        _made.clear()
        if lost:
            shown = "\n".join(f"- made by {e.made_by}: {e.task}: {e.error}" for e in lost)
            pytest.fail(f"{len(lost)} task(s) died with an exception nobody retrieved:\n{shown}", pytrace=False)
