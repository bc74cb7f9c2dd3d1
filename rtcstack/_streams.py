"""`MediaStream`: the frames of one remote participant's track of one source, whatever Room and track carry it.

The call points it at each subscribed SDK track of that participant and source (`_attach`), lets it wait when the
track goes (`_detach`), and ends it when the participant leaves or the call ends (`_end`). It owns the
`rtc.AudioStream` / `rtc.VideoStream` it reads from and the task that pipes it, and closes both when it switches tracks
or ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from livekit import rtc

from ._buffered import Buffered
from ._tasks import Tasks

__all__ = ["STREAM_BUFFER", "MediaStream"]

logger = logging.getLogger("rtcstack")

_Event = TypeVar("_Event", rtc.AudioFrameEvent, rtc.VideoFrameEvent)

STREAM_BUFFER = 100
"""Frames a `MediaStream` keeps for a reader that falls behind (1 s of 10 ms audio); older ones are dropped."""
_CLOSE_BOUND = 5.0
"""Seconds an SDK stream's `aclose()` may take before its task is cancelled (it waits for the core's end-of-stream)."""


class MediaStream(Buffered[_Event]):
    """Frames of one remote participant's track of one source, across whatever Room and track carry it.

    The call drives it: `_attach()` points it at a subscribed SDK track (opening an SDK stream on it), `_detach()`
    lets it wait for the next one, `_end()` finishes it. Iterate it with `async for`; the iteration ends after the
    call ends it, and `aclose()` ends it from the reader's side. Nothing of it runs after it ended and its closes
    finished.
    """

    def __init__(
        self,
        identity: str,
        source: int,
        kind: int,
        open_stream: Callable[[Any], Any],
        tasks: Tasks,
        on_end: Callable[[MediaStream[Any]], None],
    ) -> None:
        super().__init__(maxlen=STREAM_BUFFER)
        self.identity = identity
        self.source = source
        self.kind = kind
        self._open = open_stream
        self._tasks = tasks
        self._on_end = on_end
        self._track: Any = None
        self._inner: Any = None
        self._pipe: asyncio.Future[None] | None = None
        self._closing: set[asyncio.Future[Any]] = set()

    @property
    def ended(self) -> bool:
        """True once the stream was ended (participant left, call ended, or `aclose()`)."""
        return self._ended

    @property
    def track(self) -> Any:
        """The SDK track frames come from now, or None."""
        return self._track

    def _attach(self, track: Any) -> None:
        """Read frames from `track` (a subscribed remote track of this participant and source) from now on."""
        if self._ended or track is self._track:
            return
        self._detach()
        try:
            inner = self._open(track)
        except Exception as exc:  # an FFI request the core refused: the stream waits for the next track
            logger.warning(
                "could not open a media stream on %s's track: %s: %s", self.identity, type(exc).__name__, exc
            )
            return
        self._track, self._inner = track, inner
        self._pipe = self._tasks.spawn(self._run(inner), f"frames of {self.identity}")

    def _detach(self) -> None:
        """The track went away: close what read it and wait for the next one."""
        pipe, inner = self._pipe, self._inner
        self._pipe = self._track = self._inner = None
        if pipe is not None and inner is not None:
            pipe.cancel()
            closing = self._tasks.spawn(_close(pipe, inner), f"close a stream of {self.identity}")
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def _end(self) -> None:
        """No more frames: the participant left, the call ended, or the reader closed the stream."""
        if self._ended:
            return
        self._ended = True
        self._detach()
        self._wake()
        self._on_end(self)

    async def _run(self, inner: Any) -> None:
        async for event in inner:
            self._buffer.append(event)
            self._wake()

    async def aclose(self) -> None:
        """End the stream now and wait until its SDK stream is closed."""
        self._buffer.clear()
        self._end()
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def _close(pipe: asyncio.Future[None], inner: Any) -> None:
    """Close an SDK stream once the task that read it has ended (a cancelled task may not have started)."""
    await asyncio.wait([pipe])
    try:
        await asyncio.wait_for(inner.aclose(), _CLOSE_BOUND)
    except asyncio.TimeoutError:
        logger.warning("an SDK media stream did not close within %g s; its reader was cancelled", _CLOSE_BOUND)
