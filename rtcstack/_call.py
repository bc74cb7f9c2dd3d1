"""`Call`: the pump between a `livekit.rtc.Room` and the pure `CallMachine`.

Room callbacks, timers and user calls become machine inputs; the machine's outputs become events (through the
emitter) and rejoins. The rules live in `_machine` (lifecycle), `_roster` (participants across a reconnect), `_media`
(publications, subscriptions and streams across a reconnect) and `_tokens` (claims and refresh checks); this module
only moves data between them and the SDK.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from livekit import rtc
from livekit.rtc.participant import PublishTrackError, UnpublishTrackError

from ._emitter import EventEmitter
from ._errors import (
    AuthRejectedError,
    ConfigError,
    ConnectError,
    ConnectTimeoutError,
    InvalidStateError,
    PublishError,
    TokenError,
    TokenExpiredError,
    TokenRefreshError,
)
from ._machine import (
    CallMachine,
    ConnectFailed,
    ConnectRequested,
    DisconnectRequested,
    Emit,
    Input,
    Output,
    RejoinFailed,
    ScheduleRejoin,
    SdkConnected,
    SdkDisconnected,
    SdkReconnecting,
)
from ._media import Departures, LocalPublications, MediaStream, Published, Subscriptions
from ._models import Participant, TrackInfo, participant_from_sdk, track_info_from_sdk
from ._options import CallOptions
from ._roster import Roster
from ._tokens import (
    Refresher,
    TokenClaims,
    check_refreshed,
    check_usable,
    decode_token,
    join_ask_timeout,
    join_refresh,
    refresh_due,
    run_refresher,
)
from ._vocab import (
    TRACK_SOURCE_FROM_SDK,
    ConnectionStateName,
    DisconnectReason,
    TrackSourceName,
    quality_from_sdk,
    reason_from_sdk,
)

__all__ = ["Call", "RoomLike", "classify_connect_error", "create_call", "normalize_url"]

logger = logging.getLogger("rtcstack")

_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
_STATUS = re.compile(r"\b([45]\d\d)\b")
_PORT_AND_PATH = re.compile(r"\d+(/.*)?")
"""What follows "host:" in a URL written without a scheme ("localhost:7880" parses as scheme "localhost")."""
_REFRESH_RETRY_MAX = 30.0
_UNEXPLAINED_LEAVE_GRACE = 0.25
"""Seconds a leave with no disconnect reason waits before it is applied (see `Call._on_participant_disconnected`)."""
_WITHDRAW_BOUND = 10.0
"""Seconds the unpublish of a cancelled publish may take before it is given up (with a warning)."""
_SDK_CONNECT_GRACE = 30.0
"""Seconds past its 3 attempts of `connect_timeout` each that a Room's connect may take before it is abandoned."""
_SDK_ATTEMPT_TIMEOUT = 5.0
"""Seconds of one SDK connect or resume attempt: a Room given 5 s behaves as one given none (livekit 1.2.1)."""
_T = TypeVar("_T")
_SOURCES: dict[str, int] = {name: value for value, name in TRACK_SOURCE_FROM_SDK.items()}
_AUDIO_SOURCES = ("microphone", "screen_share_audio", "unknown")
_VIDEO_SOURCES = ("camera", "screen_share", "unknown")
_DEFAULT_PUBLISH = rtc.TrackPublishOptions()
"""The SDK's default for `LocalParticipant.publish_track(options=)` (never modified)."""


class RoomLike(Protocol):
    """The part of `livekit.rtc.Room` the pump uses (unit tests pass a fake)."""

    @property
    def local_participant(self) -> Any: ...
    @property
    def remote_participants(self) -> Mapping[str, Any]: ...
    def on(self, event: Any, callback: Callable[..., Any] | None = None) -> Callable[..., Any]: ...
    async def connect(self, url: str, token: str, options: rtc.RoomOptions = ...) -> None: ...
    async def disconnect(self) -> None: ...


def normalize_url(url: object) -> str:
    """Check a LiveKit URL and return it with a ws/wss scheme (http/https are converted)."""
    if not isinstance(url, str) or not url:
        raise ConfigError("url must be a non-empty string")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigError("url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsed on access: raises ValueError for a port that is not 0-65535)
    except ValueError as exc:
        raise ConfigError(f"url is malformed: {exc}") from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        shown = parts.scheme or "(none)"
        hint = _scheme_hint(url) if not parts.scheme or _PORT_AND_PATH.fullmatch(parts.path) else ""
        raise ConfigError(f"url scheme must be ws, wss, http or https, not {shown}{hint}")
    if not parts.hostname:
        raise ConfigError("url has no host")
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def _scheme_hint(url: str) -> str:
    """The "did you mean 'wss://...'?" for a URL written without a scheme (ws:// for a loopback host), or ""."""
    if "://" in url or "?" in url or "@" in url:  # a scheme of its own, or a query or userinfo that may hold secrets
        return ""
    local = url.startswith(("localhost", "127.", "[::1]"))
    guess = ("ws://" if local else "wss://") + url
    try:
        normalize_url(guess)
    except ConfigError:
        return ""
    return f"; did you mean {guess!r}?"


def classify_connect_error(message: str, *, token_expired: bool) -> tuple[DisconnectReason, bool]:
    """Map the text of the SDK's `ConnectError` to (reason, transient).

    The SDK reports HTTP statuses of the signal upgrade or `/validate` in its error text. 401/403 mean the server
    refused the token: `token_expired` when our copy of it has expired, else `auth_rejected` (both final for this
    token). Other failures (timeouts, refused connections, 5xx) are transient.
    """
    status = _STATUS.search(message)
    code = int(status.group(1)) if status else None
    lowered = message.lower()
    if code in (401, 403) or "unauthorized" in lowered or "forbidden" in lowered:
        return ("token_expired" if token_expired else "auth_rejected"), False
    return "join_failure", True


def _error_for(reason: DisconnectReason, message: str) -> ConnectError:
    if reason == "auth_rejected":
        return AuthRejectedError(message)
    if reason == "token_expired":
        return TokenExpiredError(message)
    if reason == "connect_timeout":
        return ConnectTimeoutError(message)
    return ConnectError(message, reason=reason)


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
        self._url = url
        self._token = token
        self._claims = _claims
        self._refresher = token_refresher
        self._options = options
        self._room_factory = _room_factory
        self._clock = _clock
        self._machine = CallMachine(options.reconnect)
        self._roster = Roster()
        self._room: RoomLike | None = None
        self._local: Participant | None = None
        self._speaking: frozenset[str] = frozenset()
        self._last_room: RoomLike | None = None
        self._room_connect: asyncio.Future[None] | None = None
        self._room_budget = 0.0
        self._connect_waiter: asyncio.Future[None] | None = None
        self._rejoin_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[bool] | None = None
        self._refresh_answered: asyncio.Future[None] | None = None
        self._refresh_backoff: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending_leaves: dict[str, asyncio.TimerHandle] = {}
        self._seen_leaving: set[str] = set()
        self._token_timer: asyncio.TimerHandle | None = None
        self._warned_for: datetime | None = None
        self._publications = LocalPublications()
        self._subscriptions = Subscriptions()
        self._followers: list[MediaStream[Any]] = []
        self._departures = Departures(_UNEXPLAINED_LEAVE_GRACE)
        self._media_room: RoomLike | None = None
        self._room_state: int | None = None
        self._watched: object = None
        self._republishing: asyncio.Task[None] | None = None

    # -- public state ------------------------------------------------------------------------------------------

    @property
    def connection_state(self) -> ConnectionStateName:
        """`"idle"`, `"connecting"`, `"connected"`, `"reconnecting"` or `"disconnected"`."""
        return self._machine.state

    @property
    def participants(self) -> list[Participant]:
        """Remote participants in join order (immutable snapshots)."""
        return self._roster.snapshot()

    @property
    def local_participant(self) -> Participant | None:
        """The local participant's snapshot, or None before the first connect."""
        return self._local

    @property
    def identity(self) -> str:
        """The local participant's identity, from the token (known before connect; a refreshed token keeps it)."""
        return self._claims.identity

    @property
    def room_name(self) -> str:
        """The name of the room, from the token (known before connect; a refreshed token keeps it)."""
        return self._claims.room

    @property
    def token_expires_at(self) -> datetime:
        """When the token now in use expires (aware UTC)."""
        return self._claims.expires_at

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
        if self._last_room is None:
            raise InvalidStateError("the call has no Room before connect()")
        return cast(rtc.Room, self._last_room)  # the factory makes rtc.Room outside unit tests

    def __repr__(self) -> str:
        return f"<Call state={self._machine.state} room={self._claims.room!r} identity={self._claims.identity!r}>"

    # -- connect / disconnect ----------------------------------------------------------------------------------

    async def connect(self, timeout: float | None = None) -> None:
        """Join the room. `timeout` (default `options.connect_timeout`) is the total deadline.

        Raises a `ConnectError` subclass when the connect fails, and `InvalidStateError` while a session is live.
        On failure, timeout or cancellation the call ends in `"disconnected"` and its Room is closed in the
        background; `disconnect()` waits for that.
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
        ):
            raise ConfigError("timeout must be a positive, finite number of seconds")
        budget = self._options.connect_timeout if timeout is None else timeout
        self._feed(ConnectRequested())
        loop = asyncio.get_running_loop()
        waiter = self._connect_waiter = loop.create_future()
        job = self._spawn(self._establish(budget))
        connected = False
        try:
            await asyncio.wait_for(asyncio.shield(waiter), budget)
            connected = True
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            self._connect_waiter = None
            waiter.cancel()
            timed_out = isinstance(exc, asyncio.TimeoutError)
            reason: DisconnectReason = "connect_timeout" if timed_out else "cancelled"
            self._feed(ConnectFailed(reason))
            if self._machine.state != "disconnected":  # the Room connected in this same instant: end it all the same
                self._feed(DisconnectRequested(reason))
            if timed_out:
                raise ConnectTimeoutError(f"connect did not finish within {budget:g} s") from None
            raise
        finally:
            if not connected:
                job.cancel()
            # else the Room's own CONN_CONNECTED event may have come before its connect() returned (its event task
            # starts inside it): that connect ends by itself, and cancelling it would close a Room just connected
            self._connect_waiter = None
        self._schedule_token_timer()

    async def _establish(self, budget: float) -> None:
        try:
            token = await self._token_for_join()
            await self._open_room(token, budget)
        except asyncio.CancelledError:
            raise
        except ConnectError as exc:
            self._fail_waiter(exc)
            self._feed(ConnectFailed(exc.reason))
        except rtc.ConnectError as exc:
            reason, _ = classify_connect_error(str(exc), token_expired=self._token_expired())
            error = _error_for(reason, f"connect failed ({reason}): {self._scrub(str(exc))}")
            error.__cause__ = exc
            self._fail_waiter(error)
            self._feed(ConnectFailed(reason))
        except Exception as exc:  # an error the SDK does not document: fail now, not at the deadline
            error = ConnectError(f"connect failed: {type(exc).__name__}: {self._scrub(str(exc))}", reason="unknown")
            error.__cause__ = exc
            self._fail_waiter(error)
            self._feed(ConnectFailed("unknown"))

    async def disconnect(self) -> None:
        """Leave the call (reason `"client_initiated"`); idempotent. Returns when nothing of it is running."""
        if self._machine.state not in ("idle", "disconnected"):
            self._feed(DisconnectRequested())
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
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
        options = rtc.TrackPublishOptions() if options is None else options
        # Shielded: the SDK publishes the track even when its publish_track is cancelled, and then forgets it (its
        # local_track_published finds no publication). A cancelled publish is withdrawn once the SDK has made it.
        publish = asyncio.ensure_future(room.local_participant.publish_track(track, options))
        try:
            publication = await asyncio.shield(publish)
        except asyncio.CancelledError:
            self._spawn(self._withdraw(room, publish))
            raise
        except PublishTrackError as exc:
            raise PublishError(f"publish_track failed: {exc}") from exc
        if room is self._room:
            self._publications.published(publication, track)
        return track_info_from_sdk(publication)

    async def _withdraw(self, room: RoomLike, publish: asyncio.Future[Any]) -> None:
        """Unpublish what a cancelled `publish_track` published all the same (nothing if it failed)."""
        try:
            publication = await publish
        except Exception:  # the publish failed: nothing to withdraw
            return
        if room is self._room:
            self._publications.remove(publication.sid)
            try:
                # bounded: seen with livekit 1.2.1, an unpublish just after the publish can never return
                await asyncio.wait_for(room.local_participant.unpublish_track(publication.sid), _WITHDRAW_BOUND)
            except (UnpublishTrackError, asyncio.TimeoutError) as exc:
                logger.warning(
                    "could not withdraw the track of a cancelled publish_track: %s", str(exc) or type(exc).__name__
                )

    def _watch_publishes(self) -> None:
        """Have every publish on the Room's local participant (through the call or directly on `call.room`) keep
        the options it asked for, for a rejoin to publish it again with: the publication cannot tell them all (its
        mime type is empty until media flows, and the SDK names no codec to the server)."""
        local = None if self._room is None else self._room.local_participant
        if local is None or local is self._watched:
            return
        self._watched = local
        publish = local.publish_track
        publications = self._publications

        async def publish_track(track: Any, options: rtc.TrackPublishOptions = _DEFAULT_PUBLISH) -> Any:
            publications.expect(track, options)
            try:
                return await publish(track, options)
            except BaseException:
                publications.abandon(track)
                raise

        publish_track.__doc__ = publish.__doc__
        setattr(local, "publish_track", publish_track)  # noqa: B010  (an instance attribute over the SDK's method)

    async def unpublish_track(self, sid: str) -> None:
        """Unpublish a local track (by the sid `publish_track` or a `track_published` event gave); it is not
        published again after a rejoin (called just after one, it waits until the call has published the track on
        the fresh Room). Raises `ConfigError` for a sid the call does not publish, `InvalidStateError` unless
        `"connected"`, and `PublishError` when the SDK refuses."""
        entry = self._publications.find(sid) if isinstance(sid, str) else None
        if entry is None:
            raise ConfigError(f"no local track is published with sid {sid!r}")
        room = self._live_room("unpublish_track")
        republishing = self._republishing
        if republishing is not None and not republishing.done():
            # Just after a rejoin the track may not be published on the fresh Room yet: the sid it gets there is
            # the one to unpublish. A track whose publish failed there is no longer kept (told as unpublished).
            await asyncio.shield(republishing)
            entry = self._publications.find(sid)
            if entry is None:
                return
            room = self._live_room("unpublish_track")
        current = entry.sids[-1]
        self._publications.remove(current)
        try:
            await room.local_participant.unpublish_track(current)
        except UnpublishTrackError as exc:
            raise PublishError(f"unpublish_track failed: {exc}") from exc

    def audio_stream(
        self, identity: str, source: TrackSourceName = "microphone", sample_rate: int = 48000, num_channels: int = 1
    ) -> MediaStream[rtc.AudioFrameEvent]:
        """Frames of `identity`'s audio track of `source`, across resumes, restarts, rejoins and republishes.

        An async iterator of `rtc.AudioFrameEvent` that yields nothing while there is no such track and ends when
        the participant leaves, the call ends, or on `aclose()`. Raises `ConfigError` for bad arguments and
        `InvalidStateError` once the call has ended.
        """
        for name, value in (("sample_rate", sample_rate), ("num_channels", num_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive int, not {value!r}")

        def open_stream(track: Any) -> rtc.AudioStream:
            return rtc.AudioStream.from_track(track=track, sample_rate=sample_rate, num_channels=num_channels)

        return self._follow(identity, source, _AUDIO_SOURCES, rtc.TrackKind.KIND_AUDIO, open_stream)

    def video_stream(self, identity: str, source: TrackSourceName = "camera") -> MediaStream[rtc.VideoFrameEvent]:
        """Frames of `identity`'s video track of `source` (`rtc.VideoFrameEvent`), like `audio_stream`."""

        def open_stream(track: Any) -> rtc.VideoStream:
            return rtc.VideoStream.from_track(track=track)

        return self._follow(identity, source, _VIDEO_SOURCES, rtc.TrackKind.KIND_VIDEO, open_stream)

    def _follow(
        self, identity: str, source: str, allowed: tuple[str, ...], kind: int, open_stream: Callable[[Any], Any]
    ) -> MediaStream[Any]:
        if not isinstance(identity, str) or not identity:
            raise ConfigError("identity must be a non-empty string")
        if identity == self._claims.identity:
            raise ConfigError(f"{identity!r} is the local participant; streams follow remote participants")
        if source not in allowed:
            raise ConfigError(f"source must be one of {', '.join(allowed)}, not {source!r}")
        if self._machine.state == "disconnected":
            raise InvalidStateError("the call has ended")
        stream: MediaStream[Any] = MediaStream(
            identity, _SOURCES[source], kind, open_stream, self._spawn, self._unfollow
        )
        self._followers.append(stream)
        room = self._room
        participant = None if room is None else room.remote_participants.get(identity)
        if participant is not None:
            for publication in participant.track_publications.values():
                if (publication.source, publication.kind) == (stream.source, kind) and publication.track is not None:
                    stream._attach(publication.track)
        return stream

    def _unfollow(self, stream: MediaStream[Any]) -> None:
        if stream in self._followers:
            self._followers.remove(stream)

    def _live_room(self, method: str) -> RoomLike:
        room = self._room
        if self._machine.state != "connected" or room is None:
            raise InvalidStateError(f"{method}() needs a connected call, not {self._machine.state}")
        return room

    def _current_publications(self) -> list[tuple[Participant, TrackInfo]]:
        return [(participant, track) for participant in self._roster.snapshot() for track in participant.tracks]

    def _media_settled(self) -> None:
        """The call is back: on a fresh Room (a rejoin), publish again what the earlier Room published."""
        room = self._room
        if room is None or room is self._media_room:
            return
        self._media_room = room
        if not self._options.auto_subscribe:
            self._resubscribe(room)
        kept = self._publications.kept()
        if kept:
            self._republishing = self._spawn(self._republish(room, kept))

    def _resubscribe(self, room: RoomLike) -> None:
        """Without auto-subscribe a fresh Room subscribes to nothing: ask it for what the app was subscribed to."""
        for identity, sid in self._subscriptions.told():
            participant = room.remote_participants.get(identity)
            publication = participant.track_publications.get(sid) if participant is not None else None
            if publication is not None and not publication.subscribed:
                publication.set_subscribed(True)

    async def _republish(self, room: RoomLike, kept: list[Published]) -> None:
        for entry in kept:
            if room is not self._room:
                return
            try:
                publication = await room.local_participant.publish_track(entry.track, entry.options)
            except Exception as exc:  # reported as the track's end: the app sees it is no longer published
                if room is not self._room:
                    return
                logger.warning(
                    "could not publish track %s again after a rejoin: %s: %s", entry.info.sid, type(exc).__name__, exc
                )
                self._publications.forget(entry)
                self._emit("track_unpublished", self._known(room.local_participant), entry.info)
            else:
                if room is self._room:  # its local_track_published may come later: an unpublish needs the sid now
                    self._publications.published(publication, entry.track)

    def _media_left(self, participant: Participant) -> None:
        """`participant` left for real: what they sent ends before `participant_left` is emitted."""
        self._departures.flush(participant.identity)
        self._run(self._subscriptions.left(participant))
        for stream in [s for s in self._followers if s.identity == participant.identity]:
            stream._end()

    # -- the pump ----------------------------------------------------------------------------------------------

    def _feed(self, event: Input) -> None:
        self._run(self._machine.handle(event))

    def _run(self, outputs: Iterable[Output]) -> None:
        for out in outputs:
            if isinstance(out, ScheduleRejoin):
                self._start_rejoin(out)
            else:
                self._dispatch(out)

    def _dispatch(self, out: Emit) -> None:
        name = out.name
        if name == "reconnecting" and not self._roster.held:
            self._roster.hold()
            self._subscriptions.hold()
            self._departures.drop()
            self._seen_leaving.clear()
        elif name == "reconnected":
            self._watch_publishes()
            self._refresh_local()
            self._release_roster()
            self._run(self._subscriptions.release(self._current_publications()))
            self._media_settled()
        elif name == "connected":
            self._watch_publishes()
            self._refresh_local()
            self._roster.seed(self._current_participants())
            self._media_room = self._room
            if self._connect_waiter is not None and not self._connect_waiter.done():
                self._connect_waiter.set_result(None)
        elif name == "participant_left":
            self._media_left(cast(Participant, out.args[0]))
        elif name == "disconnected":
            self._ended()
        self._emit(out.name, *out.args)

    def _release_roster(self) -> None:
        """The call is back: participants not in the Room who were not seen leaving get `rejoin_grace` to return."""
        current = self._current_participants()
        present = {p.identity for p in current}
        grace = self._options.rejoin_grace
        absent = [p.identity for p in self._roster.snapshot() if p.identity not in present]
        keep = [identity for identity in absent if identity not in self._seen_leaving] if grace > 0 else []
        self._run(self._roster.release(current, keep))
        for identity in keep:
            self._leave_later(identity, grace)

    def _ended(self) -> None:
        if self._connect_waiter is not None and not self._connect_waiter.done():
            reason = self._machine.disconnect_reason or "unknown"
            self._connect_waiter.set_exception(_error_for(reason, f"the call ended while connecting ({reason})"))
        for task in (self._rejoin_task, self._refresh_task):
            if task is not None:
                task.cancel()
        if self._token_timer is not None:
            self._token_timer.cancel()
            self._token_timer = None
        for handle in self._pending_leaves.values():
            handle.cancel()
        self._pending_leaves.clear()
        if self._room is not None:
            self._retire(self._room, self._room_connect)
        self._roster.clear()
        self._departures.drop()
        for stream in list(self._followers):
            stream._end()
        self._publications.clear()
        self._subscriptions.clear()
        self._media_room = None

    def _fail_waiter(self, error: ConnectError) -> None:
        if self._connect_waiter is not None and not self._connect_waiter.done():
            self._connect_waiter.set_exception(error)

    # -- rooms -------------------------------------------------------------------------------------------------

    def _room_options(self, budget: float) -> rtc.RoomOptions:
        # The SDK's own per-attempt timeout is bounded by ours, so a Room left connecting after our deadline
        # finishes (and is closed) soon after it; and by its default, which it also uses for each attempt of its
        # own resume: with the whole budget, a resume that the server holds (a cluster whose node died) is waited
        # for that long instead of being retried as a full restart.
        return rtc.RoomOptions(
            auto_subscribe=self._options.auto_subscribe,
            single_peer_connection=self._options.single_peer_connection,
            connect_timeout=min(budget, _SDK_ATTEMPT_TIMEOUT),
        )

    async def _open_room(self, token: str, budget: float) -> None:
        """Make a fresh Room the call's own and connect it within `budget`; on any failure it is retired."""
        room = self._room_factory()
        self._room = self._last_room = room
        self._room_state = None
        for stream in self._followers:  # the tracks of an earlier Room are gone with it
            stream._detach()
        self._attach(room)
        self._room_budget = budget
        task = self._room_connect = asyncio.ensure_future(room.connect(self._url, token, self._room_options(budget)))
        try:
            await asyncio.wait_for(asyncio.shield(task), budget)
        except BaseException:
            if self._room is room:
                self._retire(room, task)
            raise
        finally:
            if self._room_connect is task:
                self._room_connect = None
        if self._room is room and self._room_state != rtc.ConnectionState.CONN_RECONNECTING:
            # The Room is connected when connect() returns; its CONN_CONNECTED event comes later, behind the FFI
            # events of every Room in the process (~1 ms alone, tens of ms with 10 connecting), and is then a no-op.
            # The Room's event task starts inside connect() and may run before this line: a reconnect it reported
            # meanwhile goes on, and ends with the Room's own CONN_CONNECTED.
            self._feed(SdkConnected())

    def _retire(self, room: RoomLike, connecting: asyncio.Future[None] | None) -> None:
        """Close `room` in the background (after its connect, if one is still running) and forget it."""
        if self._room is room:
            self._room = None

        bound = 3 * self._room_budget + _SDK_CONNECT_GRACE

        async def close() -> None:
            if connecting is not None:
                await asyncio.wait([connecting], timeout=bound)
                if not connecting.done():
                    # Seen with livekit 1.2.1: a Room.connect() whose result never comes (connects cancelled as the
                    # same identity joins again). Waiting on, the Room is never closed and disconnect() never returns.
                    logger.warning("Room.connect() did not end within %g s; abandoned", bound)
                    connecting.cancel()
                    return
                if connecting.cancelled() or connecting.exception() is not None:
                    return
            await room.disconnect()

        self._spawn(close())

    def _spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run `coro` as a task of the call: `disconnect()` waits for every one of them; one that fails is logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)
        return task

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("a task of the call failed: %s: %s", type(exc).__name__, self._scrub(str(exc)))

    def _attach(self, room: RoomLike) -> None:
        def bind(handler: Callable[..., None]) -> Callable[..., None]:
            def guarded(*args: Any) -> None:
                if room is self._room:
                    handler(*args)

            return guarded

        for event, handler in (
            ("connection_state_changed", self._on_connection_state),
            ("disconnected", self._on_disconnected),
            ("participant_connected", self._on_participant_connected),
            ("participant_disconnected", self._on_participant_disconnected),
            ("participant_active", self._on_participant_changed),
            ("participant_metadata_changed", self._on_participant_changed),
            ("participant_name_changed", self._on_participant_changed),
            ("participant_attributes_changed", self._on_attributes_changed),
            ("connection_quality_changed", self._on_quality),
            ("track_published", self._on_track_published),
            ("track_unpublished", self._on_track_unpublished),
            ("track_subscribed", self._on_track_subscribed),
            ("track_unsubscribed", self._on_track_unsubscribed),
            ("track_subscription_failed", self._on_track_subscription_failed),
            ("local_track_published", self._on_local_track_published),
            ("local_track_unpublished", self._on_local_track_unpublished),
            ("local_track_republished", self._on_local_track_republished),
            ("track_muted", self._on_track_muted),
            ("track_unmuted", self._on_track_unmuted),
            ("active_speakers_changed", self._on_active_speakers),
            ("data_received", self._on_data),
            ("token_refreshed", self._on_server_token),
        ):
            room.on(event, bind(handler))

    def _current_participants(self) -> list[Participant]:
        room = self._room
        if room is None:
            return []
        return [self._snapshot(p, is_local=False) for p in room.remote_participants.values()]

    def _snapshot(self, participant: Any, *, is_local: bool) -> Participant:
        return participant_from_sdk(
            participant,
            is_local=is_local,
            quality=quality_from_sdk(participant.connection_quality),
            is_speaking=participant.identity in self._speaking,
        )

    def _refresh_local(self) -> None:
        if self._room is not None:
            self._local = self._snapshot(self._room.local_participant, is_local=True)

    def _known(self, participant: Any) -> Participant:
        """A fresh snapshot of `participant`, stored where it belongs (local, or the roster if known)."""
        is_local = self._local is not None and participant.identity == self._local.identity
        snap = self._snapshot(participant, is_local=is_local)
        if is_local:
            self._local = snap
        else:
            self._roster.replace(snap)
        return snap

    # -- Room callbacks ----------------------------------------------------------------------------------------

    def _on_connection_state(self, state: int) -> None:
        self._room_state = state
        if state == rtc.ConnectionState.CONN_CONNECTED:
            self._feed(SdkConnected())
        elif state == rtc.ConnectionState.CONN_RECONNECTING:
            self._feed(SdkReconnecting(time.monotonic()))

    def _on_disconnected(self, sdk_reason: int) -> None:
        reason, transient = reason_from_sdk(sdk_reason)
        if self._machine.state == "connecting":
            self._fail_waiter(_error_for(reason, f"the room closed while connecting ({reason})"))
            self._feed(ConnectFailed(reason))
            return
        room = self._room
        if room is not None:
            self._retire(room, None)
        self._feed(SdkDisconnected(reason, transient, time.monotonic()))

    def _on_participant_connected(self, participant: Any) -> None:
        self._run(self._roster.join(self._snapshot(participant, is_local=False)))

    def _on_participant_disconnected(self, participant: Any) -> None:
        # A full restart makes the SDK report everyone as gone, with no disconnect reason, just before RECONNECTING
        # (measured with livekit 1.2.1: the same loop iteration when idle, later under load). A leave the server gave
        # a reason for is real and applied at once; one without waits a moment, in case a reconnect begins.
        if participant.disconnect_reason and self._roster.held:
            self._seen_leaving.add(participant.identity)
        self._leave_later(participant.identity, 0.0 if participant.disconnect_reason else _UNEXPLAINED_LEAVE_GRACE)

    def _leave_later(self, identity: str, delay: float) -> None:
        """In `delay` s, `identity` has left unless the call's Room has them again (or is another Room by then)."""
        earlier = self._pending_leaves.pop(identity, None)
        if earlier is not None:
            earlier.cancel()
        loop = asyncio.get_running_loop()
        self._pending_leaves[identity] = loop.call_later(delay, self._apply_leave, identity, self._room)

    def _apply_leave(self, identity: str, room: RoomLike | None) -> None:
        self._pending_leaves.pop(identity, None)
        if room is self._room and room is not None and identity not in room.remote_participants:
            self._run(self._roster.leave(identity))

    def _on_participant_changed(self, participant: Any, *_: Any) -> None:
        snap = self._snapshot(participant, is_local=False)
        if self._local is not None and participant.identity == self._local.identity:
            self._local = self._snapshot(participant, is_local=True)
        else:
            self._run(self._roster.update(snap))

    def _on_attributes_changed(self, _changed: Any, participant: Any) -> None:
        self._on_participant_changed(participant)

    def _on_quality(self, participant: Any, quality: int) -> None:
        if participant is None:
            return
        snap = self._known(participant)
        self._emit("connection_quality_changed", snap, quality_from_sdk(quality))

    def _on_track_published(self, publication: Any, participant: Any) -> None:
        snap = self._known(participant)
        if not self._roster.held:
            self._emit("track_published", snap, track_info_from_sdk(publication))

    def _on_track_unpublished(self, publication: Any, participant: Any) -> None:
        info = track_info_from_sdk(publication)

        def apply() -> None:
            snap = self._known(participant)
            self._run(self._subscriptions.unsubscribed(snap, info.sid))
            self._emit("track_unpublished", snap, info)

        self._departures.add(participant.identity, apply)

    def _on_track_subscribed(self, track: Any, publication: Any, participant: Any) -> None:
        for stream in self._followers:
            if stream.identity == participant.identity and (stream.source, stream.kind) == (
                publication.source,
                publication.kind,
            ):
                stream._attach(track)
        self._run(self._subscriptions.subscribed(self._known(participant), track_info_from_sdk(publication)))

    def _on_track_unsubscribed(self, track: Any, publication: Any, participant: Any) -> None:
        for stream in self._followers:
            if stream.track is track:
                stream._detach()
        sid = publication.sid
        self._departures.add(
            participant.identity, lambda: self._run(self._subscriptions.unsubscribed(self._known(participant), sid))
        )

    def _on_track_subscription_failed(self, participant: Any, track_sid: str, error: str) -> None:
        snap = self._known(participant)
        self._run(self._subscriptions.unsubscribed(snap, track_sid))
        self._emit("track_subscription_failed", snap, track_sid, error)

    def _on_local_track_published(self, publication: Any, track: Any) -> None:
        if self._room is not None:
            self._publications.published(publication, track)
            snap = self._known(self._room.local_participant)
            self._emit("track_published", snap, track_info_from_sdk(publication))

    def _on_local_track_unpublished(self, publication: Any) -> None:
        room = self._room
        if room is not None:
            info = track_info_from_sdk(publication)
            self._publications.remove(info.sid)
            self._emit("track_unpublished", self._known(room.local_participant), info)

    def _on_local_track_republished(self, publication: Any, previous_sid: str) -> None:
        # The SDK's own full restart published the track again, and the server gave it a new sid: told as after a
        # rejoin, so the app knows the sid it has now.
        self._publications.renamed(publication, previous_sid)
        if self._room is not None:
            self._emit("track_published", self._known(self._room.local_participant), track_info_from_sdk(publication))

    def _on_track_muted(self, participant: Any, publication: Any) -> None:
        self._emit("track_muted", self._known(participant), track_info_from_sdk(publication))

    def _on_track_unmuted(self, participant: Any, publication: Any) -> None:
        self._emit("track_unmuted", self._known(participant), track_info_from_sdk(publication))

    def _on_active_speakers(self, speakers: list[Any]) -> None:
        before = self._speaking
        self._speaking = frozenset(p.identity for p in speakers)
        room = self._room
        if room is not None:
            for identity in before ^ self._speaking:
                sdk = room.remote_participants.get(identity)
                if sdk is None and self._local is not None and identity == self._local.identity:
                    sdk = room.local_participant
                if sdk is not None:
                    self._known(sdk)
        snaps = [s for s in (self._local_or_remote(p.identity) for p in speakers) if s is not None]
        self._emit("active_speakers_changed", snaps)

    def _local_or_remote(self, identity: str) -> Participant | None:
        if self._local is not None and identity == self._local.identity:
            return self._local
        return self._roster.get(identity)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        sender = None if packet.participant is None else self._roster.get(packet.participant.identity)
        reliable = packet.kind == rtc.DataPacketKind.KIND_RELIABLE
        self._emit("data_received", packet.data, sender, packet.topic or None, reliable)

    def _on_server_token(self) -> None:
        room = self._room
        token = getattr(room, "_token", None)  # the SDK keeps the pushed token there; it has no public getter
        if not isinstance(token, str):
            return
        try:
            claims = check_refreshed(self._claims, token)
        except TokenError as exc:
            logger.debug("ignoring a server-refreshed token: %s", exc)
            return
        self._adopt(token, claims)

    # -- rejoin ------------------------------------------------------------------------------------------------

    def _start_rejoin(self, step: ScheduleRejoin) -> None:
        running = self._rejoin_task
        if running is not None and running is not asyncio.current_task():
            running.cancel()
        self._rejoin_task = self._spawn(self._rejoin(step))

    async def _rejoin(self, step: ScheduleRejoin) -> None:
        logger.debug("rejoin attempt %d in %.3f s", step.attempt, step.delay)
        await asyncio.sleep(step.delay)
        try:
            token = await self._token_for_join()
        except ConnectError as exc:
            self._feed(DisconnectRequested(exc.reason))
            return
        try:
            await self._open_room(token, self._options.connect_timeout)
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            self._feed(RejoinFailed("network_error", True, time.monotonic()))
        except rtc.ConnectError as exc:
            expired = self._token_expired()
            reason, transient = classify_connect_error(str(exc), token_expired=expired)
            if reason == "token_expired" and self._refresher is not None:
                transient = True
            self._feed(RejoinFailed(reason, transient, time.monotonic()))
        except Exception as exc:  # an error the SDK does not document: retry by the policy rather than go silent
            logger.warning("rejoin attempt %d failed: %s: %s", step.attempt, type(exc).__name__, self._scrub(str(exc)))
            self._feed(RejoinFailed("unknown", True, time.monotonic()))

    # -- tokens ------------------------------------------------------------------------------------------------

    def _token_expired(self) -> bool:
        return self._clock() >= self._claims.expires_at

    async def _token_for_join(self) -> str:
        """The token to join with; inside the margin the refresher is asked first, as `join_refresh` says."""
        step = join_refresh(self._claims, self._clock(), self._options.token_refresh_margin)
        if step is not None:
            self._warn_expiry()
            if self._refresher is not None:
                await (self._refresh() if step == "wait" else self._ask_refresher())
            if self._token_expired():
                raise TokenExpiredError("the token has expired and no fresh token could be had")
        try:
            check_usable(self._claims, self._clock())
        except TokenError as exc:  # its 'nbf' is in the future: the server would refuse it
            raise _error_for(exc.reason or "auth_rejected", str(exc)) from None
        return self._token

    def _schedule_token_timer(self) -> None:
        if self._token_timer is not None:
            self._token_timer.cancel()
        now = self._clock()
        delay = (refresh_due(self._claims, self._options.token_refresh_margin) - now).total_seconds()
        if delay <= 0:
            # a token that lives less than the margin: its turn comes halfway through what is left of it, so a
            # refresher that hands out such tokens is not called in a tight loop
            delay = max(0.0, (self._claims.expires_at - now).total_seconds() / 2)
        self._token_timer = asyncio.get_running_loop().call_later(delay, self._on_token_due)

    def _on_token_due(self) -> None:
        self._token_timer = None
        self._warn_expiry()
        if self._refresher is not None and self._refresh_task is None:
            self._refresh_task = self._spawn(self._refresh_loop())

    def _warn_expiry(self) -> None:
        if self._warned_for != self._claims.expires_at:
            self._warned_for = self._claims.expires_at
            self._emit("token_expired", self._claims.expires_at)

    async def _refresh(self) -> bool:
        task = self._refresh_task
        if task is None:
            task = self._refresh_task = self._spawn(self._refresh_loop())
        return await asyncio.shield(task)

    async def _ask_refresher(self) -> None:
        """Wait for the refresher's next answer (asked at once if the refresh loop is in its backoff), good or bad,
        for at most `join_ask_timeout`; a failed refresh goes on in the background."""
        answered = self._refresh_answered
        if answered is None:
            answered = self._refresh_answered = asyncio.get_running_loop().create_future()
        task = self._refresh_task
        if task is None:
            task = self._refresh_task = self._spawn(self._refresh_loop())
        elif self._refresh_backoff is not None and not self._refresh_backoff.done():
            self._refresh_backoff.set_result(None)
        waits: set[asyncio.Future[Any]] = {answered, task}
        timeout = join_ask_timeout(self._claims, self._clock(), self._options.token_refresh_timeout)
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    def _refresher_answered(self) -> None:
        answered, self._refresh_answered = self._refresh_answered, None
        if answered is not None and not answered.done():
            answered.set_result(None)

    async def _refresh_loop(self) -> bool:
        """Ask the refresher until it gives an acceptable token or ours has expired."""
        refresher = self._refresher
        assert refresher is not None
        delay = 1.0
        try:
            while True:
                try:
                    token = await run_refresher(refresher, timeout=self._options.token_refresh_timeout)
                    claims = check_refreshed(self._claims, token)
                except TokenRefreshError as exc:
                    if self._clock() < refresh_due(self._claims, self._options.token_refresh_margin):
                        return True  # the token in use was refreshed meanwhile (LiveKit pushed one): nothing failed
                    self._emit("token_refresh_failed", exc)
                    left = (self._claims.expires_at - self._clock()).total_seconds()
                    if left <= 0:
                        return False
                    self._refresher_answered()
                    backoff = self._refresh_backoff = asyncio.get_running_loop().create_future()
                    await asyncio.wait({backoff}, timeout=min(delay, left))  # a join cuts it short
                    delay = min(delay * 2, _REFRESH_RETRY_MAX)
                    continue
                self._adopt(token, claims)
                return True
        finally:
            self._refresh_task = self._refresh_backoff = None
            self._refresher_answered()

    def _adopt(self, token: str, claims: TokenClaims) -> None:
        self._token = token
        self._claims = claims
        if self._machine.state in ("connected", "reconnecting"):
            self._schedule_token_timer()
        self._emit("token_refreshed", claims.expires_at)

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text


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
