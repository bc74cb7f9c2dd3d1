"""`Buffered`: the async iterator under `Call.events()` and the media streams.

Producers append to its buffer and `_wake()` the reader; once `_ended` is set, the reader drains what is buffered and
the iteration stops.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Generic, TypeVar

__all__ = ["Buffered"]

_T = TypeVar("_T")
_B = TypeVar("_B", bound="Buffered[Any]")


class Buffered(Generic[_T]):
    """An async iterator over a buffer (bounded by ``maxlen``: the oldest items go first) that producers fill."""

    __slots__ = ("_buffer", "_ended", "_waiter")

    def __init__(self, maxlen: int | None = None) -> None:
        self._buffer: deque[_T] = deque(maxlen=maxlen)
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None

    def __aiter__(self: _B) -> _B:
        return self

    async def __anext__(self) -> _T:
        while not self._buffer:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._buffer.popleft()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
