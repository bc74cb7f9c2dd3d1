"""`Waits`: futures of the server's test helpers (`LoopbackServer.wait_joined`, `wait_heard`), each resolved by a
check that runs when the server's state changes (a participant joins, a frame arrives), not by polling.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Waits"]

_T = TypeVar("_T")


class Waits:
    """Pending checks: each returns None until what it waits for is there, then the value its waiter gets."""

    def __init__(self) -> None:
        self._pending: dict[asyncio.Future[Any], Callable[[], Any]] = {}

    def changed(self, *_: object) -> None:
        """The server's state changed: run every pending check (nothing to do, and cheap, when none waits)."""
        if not self._pending:
            return
        for future, check in list(self._pending.items()):
            if not future.done() and (result := check()) is not None:
                future.set_result(result)

    async def until(self, check: Callable[[], _T | None], timeout: float | None, failure: Callable[[], str]) -> _T:
        """``check()``'s first value that is not None; ``TimeoutError(failure())`` after ``timeout`` s (None: never).

        ``failure`` runs at the timeout, so its message tells what the server had seen by then.
        """
        if timeout is not None and (isinstance(timeout, bool) or not 0 < timeout < math.inf):
            raise ValueError(f"timeout must be a positive, finite number of seconds or None, not {timeout!r}")
        result = check()
        if result is not None:
            return result
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._pending[future] = check
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(failure()) from None
        finally:
            self._pending.pop(future, None)
