"""EventEmitter: order, once/off, decorators, async handlers, failures, events() and wait_for()."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from rtcstack import _emitter
from rtcstack._emitter import CallEvent, EventEmitter
from rtcstack._errors import ConfigError
from rtcstack._vocab import EVENT_NAMES

Calls = list[tuple[str, tuple[object, ...]]]


def recorder(calls: Calls, tag: str) -> Any:
    def handler(*args: object) -> None:
        calls.append((tag, args))

    return handler


def test_handlers_run_in_registration_order_with_args() -> None:
    emitter = EventEmitter()
    calls: Calls = []
    for tag in ("a", "b", "c"):
        emitter.on("connection_quality_changed", recorder(calls, tag))
    emitter._emit("connection_quality_changed", "p", "poor")
    assert calls == [("a", ("p", "poor")), ("b", ("p", "poor")), ("c", ("p", "poor"))]


def test_on_returns_the_handler_and_works_as_a_decorator() -> None:
    emitter, seen = EventEmitter(), []

    def direct(attempt: int) -> None:
        seen.append(("direct", attempt))

    assert emitter.on("reconnecting", direct) is direct

    @emitter.on("reconnecting")
    def decorated(attempt: int) -> None:
        seen.append(("decorated", attempt))

    assert decorated.__name__ == "decorated"
    emitter._emit("reconnecting", 2)
    assert seen == [("direct", 2), ("decorated", 2)]


def test_once_runs_once_in_both_forms() -> None:
    emitter = EventEmitter()
    calls: Calls = []
    emitter.once("connected", recorder(calls, "once"))
    emitter.on("connected", recorder(calls, "on"))
    emitter.once("connected")(recorder(calls, "deco"))
    emitter._emit("connected")
    emitter._emit("connected")
    assert [tag for tag, _ in calls] == ["once", "on", "deco", "on"]


def test_once_is_removed_before_its_call() -> None:
    emitter = EventEmitter()
    calls: Calls = []

    def reenter() -> None:
        calls.append(("reenter", ()))
        emitter._emit("connected")

    emitter.once("connected", reenter)
    emitter._emit("connected")
    assert calls == [("reenter", ())]


def test_the_same_handler_once_twice_is_two_registrations() -> None:
    emitter = EventEmitter()
    calls: Calls = []
    handler = recorder(calls, "h")
    emitter.once("connected", handler)
    emitter.once("connected", handler)
    emitter._emit("connected")
    emitter._emit("connected")
    assert len(calls) == 2


def test_off_one_handler_every_registration() -> None:
    emitter = EventEmitter()
    calls: Calls = []
    keep, drop = recorder(calls, "keep"), recorder(calls, "drop")
    emitter.on("reconnected", drop)
    emitter.on("reconnected", keep)
    emitter.once("reconnected", drop)
    emitter.off("reconnected", drop)
    emitter._emit("reconnected")
    assert [tag for tag, _ in calls] == ["keep"]


def test_off_by_bound_method_equality() -> None:
    class App:
        def __init__(self) -> None:
            self.count = 0

        def on_connected(self) -> None:
            self.count += 1

    emitter, app = EventEmitter(), App()
    emitter.on("connected", app.on_connected)
    emitter.off("connected", app.on_connected)
    emitter._emit("connected")
    assert app.count == 0


def test_off_all_and_unknown_handler() -> None:
    emitter = EventEmitter()
    calls: Calls = []
    emitter.on("connected", recorder(calls, "a"))
    emitter.on("connected", recorder(calls, "b"))
    emitter.on("reconnected", recorder(calls, "other"))
    emitter.off("connected", recorder(calls, "never registered"))
    emitter._emit("connected")
    emitter.off("connected")
    emitter.off("connected")
    emitter._emit("connected")
    emitter._emit("reconnected")
    assert [tag for tag, _ in calls] == ["a", "b", "other"]


def test_emission_uses_the_handlers_it_started_with() -> None:
    emitter = EventEmitter()
    calls: Calls = []
    late = recorder(calls, "late")

    def first() -> None:
        calls.append(("first", ()))
        emitter.on("connected", late)

    emitter.on("connected", first)
    emitter._emit("connected")
    assert [tag for tag, _ in calls] == ["first"]
    emitter._emit("connected")
    assert [tag for tag, _ in calls] == ["first", "first", "late"]


@pytest.mark.parametrize("name", ["connect", "Connected", "", 3, None])
def test_unknown_event_name_is_a_config_error(name: Any) -> None:
    emitter = EventEmitter()
    for register in (emitter.on, emitter.once, emitter.off):
        with pytest.raises(ConfigError, match="unknown event name"):
            register(name, lambda: None)
    with pytest.raises(ConfigError):
        emitter.on(name)


async def test_wait_for_unknown_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        await EventEmitter().wait_for("nope")  # type: ignore[arg-type]  # the point of the test


def test_non_callable_handler_is_a_config_error() -> None:
    emitter: Any = EventEmitter()
    with pytest.raises(ConfigError, match="must be callable"):
        emitter.on("connected", 42)
    with pytest.raises(ConfigError, match="must be callable"):
        emitter.once("connected")("not a function")
    assert emitter._handlers == {}


def test_raising_handler_is_logged_and_the_next_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    emitter = EventEmitter()
    calls: Calls = []

    def broken(reason: str) -> None:
        raise RuntimeError("handler bug")

    emitter.on("disconnected", broken)
    emitter.on("disconnected", recorder(calls, "next"))
    emitter._emit("disconnected", "room_deleted")
    assert calls == [("next", ("room_deleted",))]
    [record] = [r for r in caplog.records if r.name == "rtcstack"]
    assert record.levelno == logging.ERROR
    assert "broken" in record.getMessage() and "disconnected" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


async def test_async_handler_is_tracked_and_awaited_on_close() -> None:
    emitter, steps = EventEmitter(), []

    async def slow(attempt: int) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        steps.append(attempt)

    emitter.on("reconnecting", slow)
    emitter._emit("reconnecting", 1)
    assert steps == [] and len(emitter._handler_tasks) == 1
    await emitter._aclose_handlers(timeout=30.0)
    assert steps == [1]
    assert len(emitter._handler_tasks) == 0


async def test_async_handlers_start_in_registration_order() -> None:
    emitter, started = EventEmitter(), []

    def make(tag: str) -> Any:
        async def handler() -> None:
            started.append(tag)

        return handler

    for tag in "abc":
        emitter.on("connected", make(tag))
    emitter._emit("connected")
    await emitter._aclose_handlers(timeout=30.0)
    assert started == ["a", "b", "c"]


async def test_async_handler_returning_a_future_is_tracked() -> None:
    emitter = EventEmitter()
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    emitter.on("connected", lambda: future)
    emitter._emit("connected")
    assert len(emitter._handler_tasks) == 1
    future.set_result(None)
    await emitter._aclose_handlers(timeout=30.0)
    assert len(emitter._handler_tasks) == 0


async def test_async_handler_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    emitter = EventEmitter()
    calls: Calls = []

    async def failing() -> None:
        raise ValueError("async bug")

    emitter.on("reconnected", failing)
    emitter.on("reconnected", recorder(calls, "next"))
    emitter._emit("reconnected")
    await emitter._aclose_handlers(timeout=30.0)
    assert calls == [("next", ())]
    [record] = [r for r in caplog.records if r.name == "rtcstack"]
    assert "failing" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


async def test_close_cancels_handlers_past_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    emitter, outcome = EventEmitter(), []
    never = asyncio.Event()

    async def stuck() -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    emitter.on("connected", stuck)
    emitter._emit("connected")
    await emitter._aclose_handlers(timeout=0.01)
    assert outcome == ["cancelled"]
    assert len(emitter._handler_tasks) == 0
    assert not [r for r in caplog.records if r.name == "rtcstack"]


async def test_close_abandons_a_handler_that_ignores_cancellation(caplog: pytest.LogCaptureFixture) -> None:
    emitter = EventEmitter()
    never, release = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            await release.wait()

    emitter.on("connected", stubborn)
    emitter._emit("connected")
    [task] = asyncio.all_tasks() - {asyncio.current_task()}
    await emitter._aclose_handlers(timeout=0.01)
    assert [r.levelno for r in caplog.records if r.name == "rtcstack"] == [logging.WARNING]
    release.set()
    await task
    assert len(emitter._handler_tasks) == 0


def test_async_handler_outside_a_loop_is_logged_and_closed(caplog: pytest.LogCaptureFixture) -> None:
    emitter, ran = EventEmitter(), []

    async def handler() -> None:
        ran.append(True)

    emitter.on("connected", handler)
    emitter._emit("connected")
    assert ran == [] and len(emitter._handler_tasks) == 0
    [record] = [r for r in caplog.records if r.name == "rtcstack"]
    assert "outside an event loop" in record.getMessage()


def test_non_awaitable_return_values_are_ignored() -> None:
    emitter: Any = EventEmitter()
    emitter.on("connected", lambda: 42)
    emitter._emit("connected")
    assert len(emitter._handler_tasks) == 0


async def test_events_registered_at_call_time_and_end_after_disconnected() -> None:
    emitter = EventEmitter()
    emitter._emit("connected")
    stream = emitter.events()
    emitter._emit("state_changed", "reconnecting", "connected")
    emitter._emit("reconnecting", 1)
    emitter._emit("disconnected", "network_error")
    emitter._emit("connected")
    received = [event async for event in stream]
    assert [e.name for e in received] == ["state_changed", "reconnecting", "disconnected"]
    assert received[1].attempt == 1
    assert received[2].reason == "network_error"
    assert emitter._streams == []


async def test_each_iterator_has_its_own_buffer() -> None:
    emitter = EventEmitter()
    first = emitter.events()
    emitter._emit("reconnecting", 1)
    second = emitter.events()
    emitter._emit("reconnecting", 2)
    emitter._emit("disconnected", "room_deleted")
    assert [e.attempt async for e in first] == [1, 2, None]
    assert [e.attempt async for e in second] == [2, None]


async def test_iterator_waits_for_events() -> None:
    emitter = EventEmitter()
    stream = emitter.events()
    pending = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)
    assert not pending.done()
    emitter._emit("connected")
    assert (await pending).name == "connected"


async def test_close_ends_iterators_after_their_buffer() -> None:
    emitter = EventEmitter()
    stream = emitter.events()
    waiting = emitter.events()
    pending = asyncio.ensure_future(waiting.__anext__())
    await asyncio.sleep(0)
    emitter._emit("connected")
    emitter._emit("reconnecting", 1)
    await emitter._aclose_handlers(timeout=30.0)
    assert [e.name async for e in stream] == ["connected", "reconnecting"]
    assert (await pending).name == "connected"
    emitter._emit("reconnected")
    assert [e.name async for e in waiting] == ["reconnecting"]


async def test_aclose_stops_an_iterator_and_unregisters_it() -> None:
    emitter = EventEmitter()
    stream = emitter.events()
    emitter._emit("connected")
    await stream.aclose()
    emitter._emit("reconnected")
    assert [e async for e in stream] == []
    assert emitter._streams == []


def test_a_dropped_iterator_is_forgotten() -> None:
    emitter = EventEmitter()
    emitter.events()
    kept = emitter.events()
    emitter._emit("connected")
    assert len(emitter._streams) == 1
    assert list(kept._buffer) == [CallEvent("connected")]


async def test_wait_for_returns_the_next_event() -> None:
    emitter = EventEmitter()
    waiter = asyncio.ensure_future(emitter.wait_for("reconnecting", timeout=30.0))
    await asyncio.sleep(0)
    emitter._emit("connected")
    emitter._emit("reconnecting", 3)
    emitter._emit("reconnecting", 4)
    event = await waiter
    assert event == CallEvent("reconnecting", (3,))
    assert emitter._waiters == {}


async def test_wait_for_timeout() -> None:
    emitter = EventEmitter()
    with pytest.raises(TimeoutError, match="'connected'"):
        await emitter.wait_for("connected", timeout=0)
    assert emitter._waiters == {}


async def test_wait_for_cancelled_cleans_up() -> None:
    emitter = EventEmitter()
    waiter = asyncio.ensure_future(emitter.wait_for("connected"))
    await asyncio.sleep(0)
    assert len(emitter._waiters["connected"]) == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert emitter._waiters == {}
    emitter._emit("connected")


def test_no_event_object_without_iterators_or_waiters(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []

    def counting(*args: Any) -> CallEvent:
        built.append(args)
        return CallEvent(*args)

    monkeypatch.setattr(_emitter, "CallEvent", counting)
    emitter = EventEmitter()
    emitter.on("connected", lambda: None)
    emitter._emit("connected")
    assert built == []
    emitter.events()
    stream = emitter.events()
    emitter._emit("connected")
    assert len(built) == 1 and len(stream._buffer) == 1


# Which positional argument each accessor reads, per event (DESIGN §3), written out independently of _vocab.
ACCESSORS = {
    "state_changed": {"state": 0, "previous": 1},
    "connected": {},
    "reconnecting": {"attempt": 0},
    "reconnected": {},
    "disconnected": {"reason": 0},
    "token_expired": {"expires_at": 0},
    "token_refreshed": {"expires_at": 0},
    "token_refresh_failed": {"error": 0},
    "participant_joined": {"participant": 0},
    "participant_left": {"participant": 0},
    "participant_updated": {"participant": 0},
    "connection_quality_changed": {"participant": 0, "quality": 1},
    "track_published": {"participant": 0, "track": 1},
    "track_unpublished": {"participant": 0, "track": 1},
    "track_muted": {"participant": 0, "track": 1},
    "track_unmuted": {"participant": 0, "track": 1},
    "track_subscribed": {"participant": 0, "track": 1},
    "track_unsubscribed": {"participant": 0, "track": 1},
    "track_subscription_failed": {"participant": 0, "track_sid": 1, "error": 2},
    "active_speakers_changed": {"participants": 0},
    "data_received": {"data": 0, "participant": 1, "topic": 2, "reliable": 3},
    "track_stalled": {"participant": 0, "track": 1, "reason": 2},
    "track_resumed": {"participant": 0, "track": 1, "stalled_for": 2},
    "media_restored": {"after": 0},
}
PROPERTIES = (
    "state",
    "previous",
    "attempt",
    "reason",
    "expires_at",
    "error",
    "participant",
    "quality",
    "track",
    "participants",
    "data",
    "topic",
    "track_sid",
    "reliable",
    "stalled_for",
    "after",
)


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_call_event_accessors(name: Any) -> None:
    expected = ACCESSORS[name]
    args = tuple(f"arg{i}" for i in range(len(expected)))
    event = CallEvent(name, args)
    for prop in PROPERTIES:
        want = args[expected[prop]] if prop in expected else None
        assert getattr(event, prop) == want, (name, prop)


def test_call_event_is_frozen() -> None:
    event = CallEvent("reconnecting", (1,))
    with pytest.raises(AttributeError):
        event.name = "connected"  # type: ignore[misc]  # the point of the test
    assert not hasattr(event, "__dict__")
