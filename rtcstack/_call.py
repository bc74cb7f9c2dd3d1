"""`Call`: the facade, and the pump between the SDK's Room and the pure `CallMachine`.

Public methods check their input and hand off to the call's parts: `RoomSlot` (a Room's life), `Translator` (the
SDK's events as snapshots and inputs), `TokenKeeper` (the token in use and its refresh), `CallMedia` (publications and
followed streams across Rooms). The pump feeds the machine and carries out its outputs: events to emit, rejoins, and
the turns of the call's life that the parts act on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, cast

from livekit import rtc

from . import _machine as m
from ._emitter import EventEmitter
from ._errors import ConfigError, ConnectError, ConnectTimeoutError, InvalidStateError
from ._health import CallHealth
from ._keeper import TokenKeeper
from ._media import CallMedia, check_positive, stream_source
from ._models import Participant, TrackInfo
from ._options import CallOptions, connect_budget
from ._room import RoomLike, RoomSlot, classify_join_failure, connect_error, connect_failure, normalize_url
from ._streams import MediaStream
from ._tasks import Tasks
from ._tokens import Refresher, TokenClaims, decode_token
from ._translate import Translator
from ._vocab import ConnectionStateName, DisconnectReason, TrackSourceName

__all__ = ["Call", "create_call"]

logger = logging.getLogger("rtcstack")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Call(EventEmitter):
    """One LiveKit call: its state, roster, qualities and token, over a `livekit.rtc.Room`.

    Make one with `create_call()`. Nothing happens until `connect()`; every event of the call is emitted through
    `on()` / `once()` handlers, `events()` and `wait_for()`.
    """

    def __init__(
        self,
        url: str,
        token: str,
        _claims: TokenClaims,
        *,
        token_refresher: Refresher | None,
        options: CallOptions,
        _room_factory: Callable[[], RoomLike] = rtc.Room,
        _clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """Internal: use `create_call()`. The underscored arguments are for rtcstack's own tests and benchmarks."""
        super().__init__()
        self._options = options
        self._machine = m.CallMachine(options.reconnect)
        self._tasks = Tasks("call", logger, scrub=lambda text: self._keeper.scrub(text))
        self._keeper = TokenKeeper(
            token, _claims, token_refresher, options, clock=_clock, tasks=self._tasks, emit=self._emit
        )
        self._slot = RoomSlot(url, options, _room_factory, self._tasks)
        self._translator: Translator  # made last: the parts before it tell it their news
        lost, told = (lambda i: self._translator.lost(i)), (lambda o: self._translator.told_health(o))
        self._media = CallMedia(self._slot, auto_subscribe=options.auto_subscribe, tasks=self._tasks, lost=lost)
        changed = lambda identities: self._translator.refresh(identities)  # noqa: E731  (named for the line below)
        self._health = CallHealth(options.media_stall_timeout, self._slot.stats, told, changed, self._tasks)
        self._translator = Translator(
            self._slot,
            self._media,
            self._keeper,
            self._health,
            rejoin_grace=options.rejoin_grace,
            feed=self._feed,
            apply=self._apply,
            emit=self._emit,
        )
        self._handlers_of_room = self._translator.handlers()
        self._connect_waiter: asyncio.Future[None] | None = None
        self._rejoin_task: asyncio.Future[None] | None = None

    # -- public state ------------------------------------------------------------------------------------------

    @property
    def connection_state(self) -> ConnectionStateName:
        """`"idle"`, `"connecting"`, `"connected"`, `"reconnecting"` or `"disconnected"`."""
        return self._machine.state

    @property
    def participants(self) -> list[Participant]:
        """Remote participants in join order (immutable snapshots)."""
        return self._translator.roster.snapshot()

    @property
    def local_participant(self) -> Participant | None:
        """The local participant's snapshot, or None before the first connect."""
        return self._translator.local

    @property
    def identity(self) -> str:
        """The local participant's identity, from the token (known before connect; a refreshed token keeps it)."""
        return self._keeper.claims.identity

    @property
    def room_name(self) -> str:
        """The name of the room, from the token (known before connect; a refreshed token keeps it)."""
        return self._keeper.claims.room

    @property
    def token_expires_at(self) -> datetime:
        """When the token now in use expires (aware UTC)."""
        return self._keeper.claims.expires_at

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why the call ended, or None while it has not."""
        return self._machine.disconnect_reason

    @property
    def reconnect_attempt(self) -> int:
        """The attempt of the reconnect in progress (1, 2, ...), 0 unless reconnecting."""
        return self._machine.reconnect_attempt

    @property
    def room(self) -> rtc.Room:
        """The underlying `livekit.rtc.Room` (a new object after a rejoin)."""
        room = self._slot.last
        if room is None:
            raise InvalidStateError("the call has no Room before connect()")
        return cast(rtc.Room, room)  # the factory makes rtc.Room outside unit tests

    def __repr__(self) -> str:
        return f"<Call state={self._machine.state} room={self.room_name!r} identity={self.identity!r}>"

    # -- connect / disconnect ----------------------------------------------------------------------------------

    async def connect(self, timeout: float | None = None) -> None:
        """Join the room. `timeout` (default `options.connect_timeout`) is the total deadline.

        Raises a `ConnectError` subclass when the connect fails, and `InvalidStateError` while a session is live.
        On failure, timeout or cancellation the call ends in `"disconnected"` and its Room is closed in the
        background; `disconnect()` waits for that.
        """
        budget = connect_budget(timeout, self._options.connect_timeout)
        self._feed(m.ConnectRequested())
        waiter = self._connect_waiter = asyncio.get_running_loop().create_future()
        job = self._tasks.spawn(self._establish(budget), "connect")
        connected = False
        try:
            await asyncio.wait_for(asyncio.shield(waiter), budget)
            connected = True
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            self._connect_waiter = None
            waiter.cancel()
            timed_out = isinstance(exc, asyncio.TimeoutError)
            reason: DisconnectReason = "connect_timeout" if timed_out else "cancelled"
            self._feed(m.ConnectFailed(reason))
            if self._machine.state != "disconnected":  # the Room connected in this same instant: end it all the same
                self._feed(m.DisconnectRequested(reason))
            if timed_out:
                raise ConnectTimeoutError(f"connect did not finish within {budget:g} s") from None
            raise
        finally:
            if not connected:
                job.cancel()
            # else the Room's own CONN_CONNECTED event may have come before its connect() returned (its event task
            # starts inside it): that connect ends by itself, and cancelling it would close a Room just connected
            self._connect_waiter = None
        self._keeper.start()

    async def _establish(self, budget: float) -> None:
        try:
            await self._join(budget)
        except Exception as exc:  # our own token errors, the SDK's, and any it does not document: fail now
            reason, _ = classify_join_failure(exc, token_expired=self._keeper.expired(), can_refresh=False)
            self._fail_waiter(connect_failure(exc, reason, self._keeper.scrub))
            self._feed(m.ConnectFailed(reason))

    async def _join(self, budget: float) -> None:
        """Join with a fresh Room: the first connect, and every rejoin."""
        token = await self._keeper.for_join()
        self._media.opening()
        if await self._slot.open(token, budget, self._handlers_of_room):
            self._feed(m.SdkConnected())

    async def disconnect(self) -> None:
        """Leave the call (reason `"client_initiated"`); idempotent. Returns when nothing of it is running."""
        if self._machine.state not in ("idle", "disconnected"):
            self._feed(m.DisconnectRequested())
        await self._tasks.wait()
        await self._aclose_handlers(self._options.connect_timeout)

    async def __aenter__(self) -> Call:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()

    # -- media -------------------------------------------------------------------------------------------------

    async def publish_track(
        self, track: rtc.LocalAudioTrack | rtc.LocalVideoTrack, options: rtc.TrackPublishOptions | None = None
    ) -> TrackInfo:
        """Publish a local track; after a rejoin the call publishes it again with the same options.

        Tracks published directly on `call.room` are kept too, with the options they were published with. Raises
        `ConfigError` for a track or options of the wrong type, `InvalidStateError` unless `"connected"`, and
        `PublishError` when the SDK refuses. Cancelled, it unpublishes the track once the SDK has published it.
        """
        if not isinstance(track, rtc.LocalAudioTrack | rtc.LocalVideoTrack):
            raise ConfigError(
                f"track must be an rtc.LocalAudioTrack or rtc.LocalVideoTrack, not {type(track).__name__}"
            )
        if options is not None and not isinstance(options, rtc.TrackPublishOptions):
            raise ConfigError(f"options must be an rtc.TrackPublishOptions or None, not {type(options).__name__}")
        room = self._live_room("publish_track")
        return await self._media.publish(room, track, rtc.TrackPublishOptions() if options is None else options)

    async def unpublish_track(self, sid: str) -> None:
        """Unpublish a local track (by the sid `publish_track` or a `track_published` event gave); it is not
        published again after a rejoin (called just after one, it waits until the call has published the track on
        the fresh Room). Raises `ConfigError` for a sid the call does not publish, `InvalidStateError` unless
        `"connected"`, and `PublishError` when the SDK refuses."""
        await self._media.unpublish(sid, lambda: self._live_room("unpublish_track"))

    def audio_stream(
        self, identity: str, source: TrackSourceName = "microphone", sample_rate: int = 48000, num_channels: int = 1
    ) -> MediaStream[rtc.AudioFrameEvent]:
        """Frames of `identity`'s audio track of `source`, across resumes, restarts, rejoins and republishes.

        An async iterator of `rtc.AudioFrameEvent` that yields nothing while there is no such track and ends when
        the participant leaves, the call ends, or on `aclose()`. Raises `ConfigError` for bad arguments and
        `InvalidStateError` once the call has ended.
        """
        check_positive(sample_rate=sample_rate, num_channels=num_channels)

        def open_stream(track: Any) -> rtc.AudioStream:
            return rtc.AudioStream.from_track(track=track, sample_rate=sample_rate, num_channels=num_channels)

        return self._follow(identity, source, rtc.TrackKind.KIND_AUDIO, open_stream)

    def video_stream(self, identity: str, source: TrackSourceName = "camera") -> MediaStream[rtc.VideoFrameEvent]:
        """Frames of `identity`'s video track of `source` (`rtc.VideoFrameEvent`), like `audio_stream`."""

        def open_stream(track: Any) -> rtc.VideoStream:
            return rtc.VideoStream.from_track(track=track)

        return self._follow(identity, source, rtc.TrackKind.KIND_VIDEO, open_stream)

    def _follow(self, identity: str, source: str, kind: int, open_stream: Callable[[Any], Any]) -> MediaStream[Any]:
        sdk_source = stream_source(identity, source, kind, local=self.identity)
        if self._machine.state == "disconnected":
            raise InvalidStateError("the call has ended")
        return self._media.follow(identity, sdk_source, kind, open_stream)

    def _live_room(self, method: str) -> RoomLike:
        room = self._slot.current
        if self._machine.state != "connected" or room is None:
            raise InvalidStateError(f"{method}() needs a connected call, not {self._machine.state}")
        return room

    # -- the pump ----------------------------------------------------------------------------------------------

    def _feed(self, event: m.Input) -> None:
        self._apply(self._machine.handle(event))

    def _apply(self, outputs: Iterable[m.Output]) -> None:
        for out in outputs:
            if isinstance(out, m.Emit):
                self._emit(out.name, *out.args)
            elif isinstance(out, m.Left):
                self._translator.left(out.participant)
            elif isinstance(out, m.ScheduleRejoin):
                running = self._rejoin_task
                if running is not None and running is not asyncio.current_task():
                    running.cancel()
                self._rejoin_task = self._tasks.spawn(self._rejoin(out), f"rejoin attempt {out.attempt}")
            elif isinstance(out, m.SessionStarted):
                self._media.watch_publishes()
                self._translator.session_started()
                self._media.connected()
                self._health.start()
                if self._connect_waiter is not None and not self._connect_waiter.done():
                    self._connect_waiter.set_result(None)
            elif isinstance(out, m.EpisodeStarted):
                self._translator.episode_started()
            elif isinstance(out, m.EpisodeEnded):
                self._media.watch_publishes()
                self._translator.episode_ended()
                self._media.settled()
            else:
                self._ended()

    def _ended(self) -> None:
        reason = self._machine.disconnect_reason or "unknown"
        self._fail_waiter(connect_error(reason, f"the call ended while connecting ({reason})"))
        if self._rejoin_task is not None:
            self._rejoin_task.cancel()
        self._keeper.stop()
        self._slot.retire()
        self._translator.ended()
        self._media.end()

    def _fail_waiter(self, error: ConnectError) -> None:
        if self._connect_waiter is not None and not self._connect_waiter.done():
            self._connect_waiter.set_exception(error)

    async def _rejoin(self, step: m.ScheduleRejoin) -> None:
        logger.debug("rejoin attempt %d in %.3f s", step.attempt, step.delay)
        await asyncio.sleep(step.delay)
        try:
            await self._join(self._options.connect_timeout)
        except Exception as exc:
            expired, can_refresh = self._keeper.expired(), self._keeper.can_refresh
            reason, transient = classify_join_failure(exc, token_expired=expired, can_refresh=can_refresh)
            if reason == "unknown":
                text = self._keeper.scrub(str(exc))
                logger.warning("rejoin attempt %d failed: %s: %s", step.attempt, type(exc).__name__, text)
            self._feed(m.RejoinFailed(reason, transient, time.monotonic()))


def create_call(
    url: str,
    token: str,
    *,
    token_refresher: Refresher | None = None,
    options: CallOptions | None = None,
) -> Call:
    """Make a `Call` in state `"idle"`; no I/O. Raises `ConfigError` or `TokenError` on bad input."""
    normalized = normalize_url(url)
    claims = decode_token(token)
    if token_refresher is not None and not callable(token_refresher):
        raise ConfigError("token_refresher must be callable")
    if options is None:
        options = CallOptions()
    elif not isinstance(options, CallOptions):
        raise ConfigError("options must be a CallOptions")
    return Call(normalized, token, claims, token_refresher=token_refresher, options=options)
