"""Work that runs beside its owner: tracked tasks (`Tasks`) and actions that wait a moment (`Later`)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

__all__ = ["Later", "Tasks"]

_T = TypeVar("_T")


class Tasks:
    """The tasks of one owner (``owner`` names them in log lines). A task that fails is logged once on ``logger``
    (its message passed through ``scrub`` when one is given, then without a traceback, which could show what was
    scrubbed); `wait` lets them end, `close` cancels them."""

    def __init__(self, owner: str, logger: logging.Logger, scrub: Callable[[str], str] | None = None) -> None:
        self._owner = owner
        self._logger = logger
        self._scrub = scrub
        self._running: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._running)

    def spawn(self, work: Awaitable[_T], name: str) -> asyncio.Task[_T]:
        """Run `work` (a coroutine or any awaitable) as a task named ``"<owner>: <name>"``."""
        coro = work if inspect.iscoroutine(work) else _wait(work)
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._owner}: {name}")
        self._running.add(task)
        task.add_done_callback(lambda done: self._done(done, name))
        return task

    def _done(self, task: asyncio.Task[Any], name: str) -> None:
        self._running.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if self._scrub is None:
            self._logger.error("%s: %s failed: %s: %s", self._owner, name, type(exc).__name__, exc, exc_info=exc)
        else:
            self._logger.error("%s: %s failed: %s: %s", self._owner, name, type(exc).__name__, self._scrub(str(exc)))

    async def wait(self) -> None:
        """Wait until every task has ended, those they spawn meanwhile included."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def close(self, grace: float = 0.0, bound: float | None = None) -> None:
        """Give the tasks `grace` seconds to end, cancel the rest and wait `bound` seconds (None: as long as it takes)
        for them to unwind; one that ignores its cancellation is abandoned with a warning."""
        if grace > 0 and self._running:
            await asyncio.wait(set(self._running), timeout=grace)
        while self._running:
            running = set(self._running)
            for task in running:
                task.cancel()
            _, stuck = await asyncio.wait(running, timeout=bound)
            for task in stuck:
                self._running.discard(task)
                self._logger.warning("%s: task %r ignored its cancellation; abandoned", self._owner, task)


async def _wait(awaitable: Awaitable[_T]) -> _T:
    return await awaitable


class Later:
    """Actions that wait a moment, by key: scheduling a key again replaces its action; `flush` applies a group's at
    once and `drop` forgets a group's. A key is ``(group, what)``; actions of one group due together are applied in
    the order they were scheduled."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[Hashable, Hashable], tuple[asyncio.TimerHandle, Callable[[], None]]] = {}

    def __contains__(self, key: tuple[Hashable, Hashable]) -> bool:
        return key in self._waiting

    def __len__(self) -> int:
        return len(self._waiting)

    def schedule(self, key: tuple[Hashable, Hashable], delay: float, apply: Callable[[], None]) -> None:
        """Call `apply` in `delay` seconds, instead of what `key` waited for until now."""
        self.cancel(key)
        handle = asyncio.get_running_loop().call_later(delay, self._due, key)
        self._waiting[key] = (handle, apply)

    def due_in(self, key: tuple[Hashable, Hashable]) -> float | None:
        """Seconds until `key`'s action, or None when nothing waits under `key`."""
        waiting = self._waiting.get(key)
        return None if waiting is None else waiting[0].when() - asyncio.get_running_loop().time()

    def _due(self, key: tuple[Hashable, Hashable]) -> None:
        _, apply = self._waiting.pop(key)
        apply()

    def cancel(self, key: tuple[Hashable, Hashable]) -> None:
        """Forget what `key` waits for."""
        waiting = self._waiting.pop(key, None)
        if waiting is not None:
            waiting[0].cancel()

    def flush(self, group: Hashable, keep: Callable[[Hashable], bool] = lambda what: False) -> None:
        """Apply `group`'s waiting actions now, in order (but those whose `what` is to `keep`)."""
        for key in [k for k in self._waiting if k[0] == group and not keep(k[1])]:
            handle, apply = self._waiting.pop(key)
            handle.cancel()
            apply()

    def drop(self, which: Callable[[Hashable], bool] = lambda what: True) -> None:
        """Forget the waiting actions whose `what` is `which` (every one by default)."""
        for key in [k for k in self._waiting if which(k[1])]:
            self.cancel(key)
