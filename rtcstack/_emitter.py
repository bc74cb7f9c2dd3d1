"""The typed event hub that ``Call`` inherits: push style (``on``/``once``/``off``) and pull style
(``events()``, ``wait_for()``).

Handlers run in registration order, synchronously inside ``_emit``. A handler may return an awaitable (an
``async def`` handler): it runs as a task the emitter tracks, and ``_aclose_handlers`` awaits or cancels it.
A handler that raises, in its own call or in its task, is logged on the ``rtcstack`` logger with its
traceback and never stops the others. ``on``/``once`` are overloaded per event name, so mypy checks each
handler's signature against the table of ``EVENT_ARGS``; at run time ``on``/``once`` refuse a handler whose
signature cannot take them, for users who do not run mypy.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias, TypeVar, cast, overload

from ._buffered import Buffered
from ._errors import ConfigError
from ._models import Participant, TrackInfo
from ._tasks import Tasks
from ._vocab import (
    EVENT_ARGS,
    EVENT_NAMES,
    ConnectionStateName,
    DisconnectReason,
    EventName,
    QualityName,
    StallReason,
)

__all__ = ["CallEvent", "EventEmitter", "EventStream", "HandlerResult"]

logger = logging.getLogger("rtcstack")

HandlerResult: TypeAlias = Awaitable[None] | None
"""What a handler may return: None (a plain function) or an awaitable (an ``async def`` handler)."""

_NoArgsH = TypeVar("_NoArgsH", bound=Callable[[], HandlerResult])
_StateH = TypeVar("_StateH", bound=Callable[[ConnectionStateName, ConnectionStateName], HandlerResult])
_AttemptH = TypeVar("_AttemptH", bound=Callable[[int], HandlerResult])
_ReasonH = TypeVar("_ReasonH", bound=Callable[[DisconnectReason], HandlerResult])
_ExpiryH = TypeVar("_ExpiryH", bound=Callable[[datetime], HandlerResult])
_ErrorH = TypeVar("_ErrorH", bound=Callable[[Exception], HandlerResult])
_ParticipantH = TypeVar("_ParticipantH", bound=Callable[[Participant], HandlerResult])
_QualityH = TypeVar("_QualityH", bound=Callable[[Participant, QualityName], HandlerResult])
_TrackH = TypeVar("_TrackH", bound=Callable[[Participant, TrackInfo], HandlerResult])
_SpeakersH = TypeVar("_SpeakersH", bound=Callable[[list[Participant]], HandlerResult])
_SubFailedH = TypeVar("_SubFailedH", bound=Callable[[Participant, str, str], HandlerResult])
_DataH = TypeVar("_DataH", bound=Callable[[bytes, Participant | None, str | None, bool], HandlerResult])
_StalledH = TypeVar("_StalledH", bound=Callable[[Participant, TrackInfo, StallReason], HandlerResult])
_ResumedH = TypeVar("_ResumedH", bound=Callable[[Participant, TrackInfo, float], HandlerResult])
_RestoredH = TypeVar("_RestoredH", bound=Callable[[float], HandlerResult])

_NoArgsEvent = Literal["connected", "reconnected"]
_ExpiryEvent = Literal["token_expired", "token_refreshed"]
_ParticipantEvent = Literal["participant_joined", "participant_left", "participant_updated"]
_TrackEvent = Literal[
    "track_published", "track_unpublished", "track_muted", "track_unmuted", "track_subscribed", "track_unsubscribed"
]

_Handler: TypeAlias = Callable[..., object]
_Entry: TypeAlias = tuple[_Handler, bool]  # (handler, once)

_KNOWN_EVENTS = frozenset(EVENT_NAMES)
_ARG_INDEX: dict[str, dict[str, int]] = {
    name: {arg: i for i, arg in enumerate(args)} for name, args in EVENT_ARGS.items()
}


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One emitted event: its name and positional arguments, with typed accessors by argument name.

    An accessor returns None when the event has no argument of that name (``event.attempt`` of a
    ``"connected"`` event), and also where the argument itself may be None (``participant``, ``topic`` of
    ``"data_received"``).
    """

    name: EventName
    args: tuple[object, ...] = ()

    def _arg(self, arg: str) -> Any:
        index = _ARG_INDEX[self.name].get(arg)
        return None if index is None else self.args[index]

    @property
    def state(self) -> ConnectionStateName | None:
        """The new state (``state_changed``)."""
        return cast("ConnectionStateName | None", self._arg("state"))

    @property
    def previous(self) -> ConnectionStateName | None:
        """The state before (``state_changed``)."""
        return cast("ConnectionStateName | None", self._arg("previous"))

    @property
    def attempt(self) -> int | None:
        """The reconnect attempt, 1-based (``reconnecting``)."""
        return cast("int | None", self._arg("attempt"))

    @property
    def reason(self) -> DisconnectReason | StallReason | None:
        """Why the call ended (``disconnected``), or why a track stalled (``track_stalled``)."""
        return cast("DisconnectReason | StallReason | None", self._arg("reason"))

    @property
    def expires_at(self) -> datetime | None:
        """Expiry of the token concerned (``token_expired``, ``token_refreshed``)."""
        return cast("datetime | None", self._arg("expires_at"))

    @property
    def error(self) -> Exception | str | None:
        """What went wrong: an exception (``token_refresh_failed``), the SDK's text (``track_subscription_failed``)."""
        return cast("Exception | str | None", self._arg("error"))

    @property
    def participant(self) -> Participant | None:
        """The participant concerned (participant, track, quality and data events)."""
        return cast("Participant | None", self._arg("participant"))

    @property
    def quality(self) -> QualityName | None:
        """The new connection quality (``connection_quality_changed``)."""
        return cast("QualityName | None", self._arg("quality"))

    @property
    def track(self) -> TrackInfo | None:
        """The track concerned (``track_*``)."""
        return cast("TrackInfo | None", self._arg("track"))

    @property
    def track_sid(self) -> str | None:
        """The sid of the track that could not be subscribed (``track_subscription_failed``)."""
        return cast("str | None", self._arg("track_sid"))

    @property
    def participants(self) -> list[Participant] | None:
        """The active speakers, loudest first (``active_speakers_changed``)."""
        return cast("list[Participant] | None", self._arg("participants"))

    @property
    def data(self) -> bytes | None:
        """The payload (``data_received``)."""
        return cast("bytes | None", self._arg("data"))

    @property
    def topic(self) -> str | None:
        """The topic, if the sender gave one (``data_received``)."""
        return cast("str | None", self._arg("topic"))

    @property
    def reliable(self) -> bool | None:
        """True for a packet sent reliably, False for a lossy one (``data_received``)."""
        return cast("bool | None", self._arg("reliable"))

    @property
    def stalled_for(self) -> float | None:
        """Seconds the track went without media (``track_resumed``)."""
        return cast("float | None", self._arg("stalled_for"))

    @property
    def after(self) -> float | None:
        """Seconds from ``reconnecting`` until every track that flowed before flows again (``media_restored``)."""
        return cast("float | None", self._arg("after"))


class EventStream(Buffered[CallEvent]):
    """An async iterator of ``CallEvent``: it buffers every event from its creation and ends after
    ``"disconnected"`` (or when the emitter closes, or on ``aclose()``). Dropping it unregisters it."""

    __slots__ = ("__weakref__",)

    async def aclose(self) -> None:
        """Stop now: drop buffered events and end the iteration."""
        self._buffer.clear()
        self._end()

    def _push(self, event: CallEvent) -> bool:
        """Buffer ``event``; False once the stream has ended (the emitter then forgets it)."""
        if self._ended:
            return False
        self._buffer.append(event)
        if event.name == "disconnected":
            self._ended = True
        self._wake()
        return not self._ended

    def _end(self) -> None:
        self._ended = True
        self._wake()


def _check_name(name: object) -> None:
    if not isinstance(name, str) or name not in _KNOWN_EVENTS:
        hint = ""
        if isinstance(name, str):
            near = difflib.get_close_matches(name.lower(), EVENT_NAMES, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"unknown event name {name!r}{hint}; expected one of: {', '.join(EVENT_NAMES)}")


def _check_signature(name: str, handler: _Handler) -> None:
    """Refuse a handler that cannot be called with the positional arguments of ``name`` events."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # a builtin or extension callable that tells no signature: it can only be tried
        return
    args = tuple(_ARG_INDEX[name])
    try:
        signature.bind(*args)
    except TypeError as exc:
        passed = f"{len(args)} argument{'s' if len(args) > 1 else ''} ({', '.join(args)})" if args else "no argument"
        raise ConfigError(
            f"handler {_describe(handler)}{signature} cannot take what {name!r} passes: {passed} ({exc})"
        ) from None


def _describe(handler: _Handler) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)


class EventEmitter:
    """Typed event hub; subclasses (``Call``) must call ``super().__init__()``."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[_Entry, ...]] = {}
        self._handler_tasks = Tasks("handlers", logger)
        self._streams: list[weakref.ref[EventStream]] = []  # weak: a dropped iterator unregisters itself
        self._waiters: dict[str, list[asyncio.Future[CallEvent]]] = {}

    # -- registration ---------------------------------------------------------------------------------------

    @overload
    def on(self, name: Literal["state_changed"], handler: _StateH) -> _StateH: ...
    @overload
    def on(self, name: Literal["state_changed"], handler: None = None) -> Callable[[_StateH], _StateH]: ...
    @overload
    def on(self, name: _NoArgsEvent, handler: _NoArgsH) -> _NoArgsH: ...
    @overload
    def on(self, name: _NoArgsEvent, handler: None = None) -> Callable[[_NoArgsH], _NoArgsH]: ...
    @overload
    def on(self, name: Literal["reconnecting"], handler: _AttemptH) -> _AttemptH: ...
    @overload
    def on(self, name: Literal["reconnecting"], handler: None = None) -> Callable[[_AttemptH], _AttemptH]: ...
    @overload
    def on(self, name: Literal["disconnected"], handler: _ReasonH) -> _ReasonH: ...
    @overload
    def on(self, name: Literal["disconnected"], handler: None = None) -> Callable[[_ReasonH], _ReasonH]: ...
    @overload
    def on(self, name: _ExpiryEvent, handler: _ExpiryH) -> _ExpiryH: ...
    @overload
    def on(self, name: _ExpiryEvent, handler: None = None) -> Callable[[_ExpiryH], _ExpiryH]: ...
    @overload
    def on(self, name: Literal["token_refresh_failed"], handler: _ErrorH) -> _ErrorH: ...
    @overload
    def on(self, name: Literal["token_refresh_failed"], handler: None = None) -> Callable[[_ErrorH], _ErrorH]: ...
    @overload
    def on(self, name: _ParticipantEvent, handler: _ParticipantH) -> _ParticipantH: ...
    @overload
    def on(self, name: _ParticipantEvent, handler: None = None) -> Callable[[_ParticipantH], _ParticipantH]: ...
    @overload
    def on(self, name: Literal["connection_quality_changed"], handler: _QualityH) -> _QualityH: ...
    @overload
    def on(
        self, name: Literal["connection_quality_changed"], handler: None = None
    ) -> Callable[[_QualityH], _QualityH]: ...
    @overload
    def on(self, name: _TrackEvent, handler: _TrackH) -> _TrackH: ...
    @overload
    def on(self, name: _TrackEvent, handler: None = None) -> Callable[[_TrackH], _TrackH]: ...
    @overload
    def on(self, name: Literal["track_subscription_failed"], handler: _SubFailedH) -> _SubFailedH: ...
    @overload
    def on(
        self, name: Literal["track_subscription_failed"], handler: None = None
    ) -> Callable[[_SubFailedH], _SubFailedH]: ...
    @overload
    def on(self, name: Literal["active_speakers_changed"], handler: _SpeakersH) -> _SpeakersH: ...
    @overload
    def on(
        self, name: Literal["active_speakers_changed"], handler: None = None
    ) -> Callable[[_SpeakersH], _SpeakersH]: ...
    @overload
    def on(self, name: Literal["data_received"], handler: _DataH) -> _DataH: ...
    @overload
    def on(self, name: Literal["data_received"], handler: None = None) -> Callable[[_DataH], _DataH]: ...
    @overload
    def on(self, name: Literal["track_stalled"], handler: _StalledH) -> _StalledH: ...
    @overload
    def on(self, name: Literal["track_stalled"], handler: None = None) -> Callable[[_StalledH], _StalledH]: ...
    @overload
    def on(self, name: Literal["track_resumed"], handler: _ResumedH) -> _ResumedH: ...
    @overload
    def on(self, name: Literal["track_resumed"], handler: None = None) -> Callable[[_ResumedH], _ResumedH]: ...
    @overload
    def on(self, name: Literal["media_restored"], handler: _RestoredH) -> _RestoredH: ...
    @overload
    def on(self, name: Literal["media_restored"], handler: None = None) -> Callable[[_RestoredH], _RestoredH]: ...
    def on(self, name: str, handler: _Handler | None = None) -> Any:
        """Call ``handler`` on every ``name`` event; returns it. Without ``handler``, returns a decorator.

        Raises ``ConfigError`` for an unknown name (with the nearest known one) and for a handler whose signature
        cannot take the event's positional arguments (``EVENT_ARGS``; ``*args`` and defaults are fine).
        """
        return self._register(name, handler, once=False)

    @overload
    def once(self, name: Literal["state_changed"], handler: _StateH) -> _StateH: ...
    @overload
    def once(self, name: Literal["state_changed"], handler: None = None) -> Callable[[_StateH], _StateH]: ...
    @overload
    def once(self, name: _NoArgsEvent, handler: _NoArgsH) -> _NoArgsH: ...
    @overload
    def once(self, name: _NoArgsEvent, handler: None = None) -> Callable[[_NoArgsH], _NoArgsH]: ...
    @overload
    def once(self, name: Literal["reconnecting"], handler: _AttemptH) -> _AttemptH: ...
    @overload
    def once(self, name: Literal["reconnecting"], handler: None = None) -> Callable[[_AttemptH], _AttemptH]: ...
    @overload
    def once(self, name: Literal["disconnected"], handler: _ReasonH) -> _ReasonH: ...
    @overload
    def once(self, name: Literal["disconnected"], handler: None = None) -> Callable[[_ReasonH], _ReasonH]: ...
    @overload
    def once(self, name: _ExpiryEvent, handler: _ExpiryH) -> _ExpiryH: ...
    @overload
    def once(self, name: _ExpiryEvent, handler: None = None) -> Callable[[_ExpiryH], _ExpiryH]: ...
    @overload
    def once(self, name: Literal["token_refresh_failed"], handler: _ErrorH) -> _ErrorH: ...
    @overload
    def once(self, name: Literal["token_refresh_failed"], handler: None = None) -> Callable[[_ErrorH], _ErrorH]: ...
    @overload
    def once(self, name: _ParticipantEvent, handler: _ParticipantH) -> _ParticipantH: ...
    @overload
    def once(self, name: _ParticipantEvent, handler: None = None) -> Callable[[_ParticipantH], _ParticipantH]: ...
    @overload
    def once(self, name: Literal["connection_quality_changed"], handler: _QualityH) -> _QualityH: ...
    @overload
    def once(
        self, name: Literal["connection_quality_changed"], handler: None = None
    ) -> Callable[[_QualityH], _QualityH]: ...
    @overload
    def once(self, name: _TrackEvent, handler: _TrackH) -> _TrackH: ...
    @overload
    def once(self, name: _TrackEvent, handler: None = None) -> Callable[[_TrackH], _TrackH]: ...
    @overload
    def once(self, name: Literal["track_subscription_failed"], handler: _SubFailedH) -> _SubFailedH: ...
    @overload
    def once(
        self, name: Literal["track_subscription_failed"], handler: None = None
    ) -> Callable[[_SubFailedH], _SubFailedH]: ...
    @overload
    def once(self, name: Literal["active_speakers_changed"], handler: _SpeakersH) -> _SpeakersH: ...
    @overload
    def once(
        self, name: Literal["active_speakers_changed"], handler: None = None
    ) -> Callable[[_SpeakersH], _SpeakersH]: ...
    @overload
    def once(self, name: Literal["data_received"], handler: _DataH) -> _DataH: ...
    @overload
    def once(self, name: Literal["data_received"], handler: None = None) -> Callable[[_DataH], _DataH]: ...
    @overload
    def once(self, name: Literal["track_stalled"], handler: _StalledH) -> _StalledH: ...
    @overload
    def once(self, name: Literal["track_stalled"], handler: None = None) -> Callable[[_StalledH], _StalledH]: ...
    @overload
    def once(self, name: Literal["track_resumed"], handler: _ResumedH) -> _ResumedH: ...
    @overload
    def once(self, name: Literal["track_resumed"], handler: None = None) -> Callable[[_ResumedH], _ResumedH]: ...
    @overload
    def once(self, name: Literal["media_restored"], handler: _RestoredH) -> _RestoredH: ...
    @overload
    def once(self, name: Literal["media_restored"], handler: None = None) -> Callable[[_RestoredH], _RestoredH]: ...
    def once(self, name: str, handler: _Handler | None = None) -> Any:
        """Like ``on``, but the handler is removed before its first call."""
        return self._register(name, handler, once=True)

    def off(self, name: EventName, handler: _Handler | None = None) -> None:
        """Remove every registration of ``handler`` for ``name`` (all of that name's handlers if None).

        Removing a handler that is not registered does nothing. An emission already under way still calls
        the handlers it started with.
        """
        _check_name(name)
        if handler is None:
            self._handlers.pop(name, None)
            return
        entries = self._handlers.get(name, ())
        self._set_entries(name, tuple(entry for entry in entries if entry[0] != handler))

    def _register(self, name: str, handler: _Handler | None, *, once: bool) -> Any:
        _check_name(name)
        if handler is None:

            def decorator(func: _Handler) -> _Handler:
                self._add(name, func, once)
                return func

            return decorator
        self._add(name, handler, once)
        return handler

    def _add(self, name: str, handler: _Handler, once: bool) -> None:
        if not callable(handler):
            raise ConfigError(f"handler for {name!r} must be callable, got {type(handler).__name__}")
        _check_signature(name, handler)
        self._handlers[name] = (*self._handlers.get(name, ()), (handler, once))

    def _set_entries(self, name: str, entries: tuple[_Entry, ...]) -> None:
        if entries:
            self._handlers[name] = entries
        else:
            self._handlers.pop(name, None)

    # -- pull style -----------------------------------------------------------------------------------------

    def events(self) -> EventStream:
        """An async iterator of every event from now on; it ends after ``"disconnected"``.

        Each call returns a new iterator with its own buffer, registered at once (not at the first ``await``).
        """
        stream = EventStream()
        self._streams.append(weakref.ref(stream))
        return stream

    async def wait_for(self, name: EventName, timeout: float | None = None) -> CallEvent:
        """The next ``name`` event; raises ``TimeoutError`` after ``timeout`` seconds (None: wait forever)."""
        _check_name(name)
        future: asyncio.Future[CallEvent] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, []).append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no {name!r} event within {timeout} s") from None
        finally:
            waiters = self._waiters.get(name)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[name]

    # -- emission -------------------------------------------------------------------------------------------

    def _emit(self, name: EventName, *args: object) -> None:
        """Deliver one event: handlers in registration order, then iterators and waiters.

        An ``Exception`` from a handler is logged, never raised; the handlers are those registered when the
        emission began (a ``once`` handler is removed before its call).
        """
        entries = self._handlers.get(name)
        if entries:
            for entry in entries:
                handler, once = entry
                if once:
                    self._set_entries(name, tuple(e for e in self._handlers.get(name, ()) if e is not entry))
                try:
                    result = handler(*args)
                except (Exception, asyncio.CancelledError):  # a plain call is never cancelled: its own bug too
                    logger.exception("%r handler %s raised", name, _describe(handler))
                    continue
                if result is not None and inspect.isawaitable(result):
                    self._start_task(name, handler, result)
        if self._waiters or self._streams:
            self._deliver(CallEvent(name, args))

    def _deliver(self, event: CallEvent) -> None:
        live = []
        for ref in self._streams:
            stream = ref()
            if stream is not None and stream._push(event):
                live.append(ref)
        self._streams = live
        for future in self._waiters.pop(event.name, ()):
            if not future.done():
                future.set_result(event)

    def _start_task(self, name: str, handler: _Handler, awaitable: Awaitable[object]) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            logger.error("%r handler %s returned an awaitable outside an event loop; not run", name, _describe(handler))
            return
        self._handler_tasks.spawn(awaitable, f"{name!r} handler {_describe(handler)}")

    async def _aclose_handlers(self, timeout: float) -> None:
        """End every iterator; wait up to ``timeout`` s for running async handlers, then cancel the rest.

        Cancelled handlers get up to another ``timeout`` to unwind; one that ignores cancellation is
        abandoned with a warning.
        """
        for ref in self._streams:
            stream = ref()
            if stream is not None:
                stream._end()
        self._streams = []
        await self._handler_tasks.close(grace=timeout, bound=timeout)
