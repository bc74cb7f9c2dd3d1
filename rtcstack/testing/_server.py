"""LoopbackServer: a LiveKit-protocol server on loopback (aiohttp + aiortc), with fault injection.

Routes: ``/rtc/v1`` (single peer connection, the SDK's default) and ``/rtc`` (legacy, two peer connections), each
with ``/validate``. `LoopbackServer.build_app` makes the aiohttp application; other modules add their routes to it
(the Twirp RoomService goes under ``/twirp/livekit.RoomService/``) and drive rooms through `LoopbackServer.registry`.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
from aiohttp import web
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from .._tasks import Tasks
from .._vocab import TRACK_SOURCES
from ._cors import enable_cors
from ._forward import STALL_MODES, ReceivedTrack, Source
from ._grants import BaseServer
from ._rooms import Participant, RoomRegistry, new_sid
from ._router import MediaRouter
from ._session import Session, SessionConfig
from ._synthetic import play_audio, play_video, read_audio
from ._tables import CONNECTION_QUALITIES, DISCONNECT_REASONS, LEAVE_ACTIONS, PARTICIPANT_KINDS, QUALITY_SCORES
from ._twirp import RoomService
from ._waits import Waits
from ._wire import BadRequest, bearer_token, decode_join_request, legacy_join_request

__all__ = ["LoopbackServer"]

logger = logging.getLogger("rtcstack.testing")

_MAX_FRAME = 1 << 20


@dataclass
class _Refusal:
    count: int
    status: int
    identity: str | None


class LoopbackServer(BaseServer):
    """A LiveKit-protocol server that the real ``livekit.rtc.Room`` connects to, with fault injection.

    Use as ``async with LoopbackServer() as server`` or with `start` / `close`. Tokens are checked like the real
    server does (HS256 with ``api_key`` / ``api_secret``); `token` mints them. ``ping_interval`` / ``ping_timeout``
    (seconds) go to clients in the JoinResponse; a detached session (socket lost, no resume) leaves its room after
    ``departure_timeout``. With ``token_refresh`` the server pushes a fresh token at join and every
    ``token_refresh_interval`` seconds, as LiveKit does. A token is accepted until ``token_leeway`` seconds past its
    ``exp`` (60, as LiveKit; less makes "the server refuses an expired token" quick to test). As LiveKit, the
    joins, state changes and leaves of participants who publish nothing are sent to the room in batches every
    ``update_interval`` seconds (3), the latest of each participant only; anything else at once.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str = "devkey",
        api_secret: str | None = None,
        token_refresh: bool = True,
        token_refresh_interval: float = 300.0,
        ping_interval: int = 5,
        ping_timeout: int = 15,
        departure_timeout: float = 20.0,
        token_leeway: float = 60.0,
        update_interval: float = 3.0,
    ) -> None:
        if ping_interval <= 0 or ping_timeout <= 0:
            raise ValueError("ping_interval and ping_timeout must be positive (0 breaks the SDK)")
        if not 0 <= token_leeway < float("inf"):
            raise ValueError("token_leeway must be a finite number of seconds >= 0")
        if not 0 <= update_interval < float("inf"):
            raise ValueError("update_interval must be a finite number of seconds >= 0")
        self.host = host
        self.api_key = api_key
        self.api_secret = api_secret if api_secret is not None else secrets.token_urlsafe(32)
        self.registry = RoomRegistry(update_interval)
        self.router = MediaRouter(self.registry)
        self.registry.departures.append(self.router.left)
        self._waits = Waits()
        self.registry.arrivals.append(self._waits.changed)
        self.router.on_frame = self._waits.changed
        self._port = port
        self._config = SessionConfig(
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            departure_timeout=departure_timeout,
            token_refresh_interval=token_refresh_interval if token_refresh else None,
            mint=lambda session, ttl: self._reissue(session.participant.info, session.participant.room, ttl),
        )
        self._verifier = api.TokenVerifier(api_key, self.api_secret, leeway=datetime.timedelta(seconds=token_leeway))
        self._runner: web.AppRunner | None = None
        self._sessions: set[Session] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._refusal: _Refusal | None = None
        self._rejected: set[str] = set()
        self._players = Tasks("synthetic media", logger)

    @property
    def _listening(self) -> bool:
        return self._runner is not None

    def _state(self) -> str:
        return f"rooms={len(self.registry.rooms())}"

    def build_app(self) -> web.Application:
        """The aiohttp application with the signal and Twirp routes, CORS on all; add more routes before `start`."""
        app = web.Application()
        enable_cors(app)
        app.router.add_get("/rtc/v1/validate", self._validate)
        app.router.add_get("/rtc/validate", self._validate)
        app.router.add_get("/rtc/v1", self._signal)
        app.router.add_get("/rtc", self._signal)
        RoomService(self.registry, self.api_key, self.api_secret).add_routes(app)
        return app

    async def start(self, app: web.Application | None = None) -> None:
        """Listen on ``host:port`` (port 0 picks a free one), serving ``app`` or `build_app`'s."""
        if self._runner is not None:
            raise RuntimeError("LoopbackServer already started")
        runner = web.AppRunner(app if app is not None else self.build_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        await site.start()
        self._runner = runner
        sockets = runner.addresses
        self._port = int(sockets[0][1])
        logger.info("LoopbackServer listening on %s", self.url)

    async def close(self) -> None:
        """Tell every client the server is shutting down, close every socket and peer connection, stop."""
        leave = pr.LeaveRequest(reason=pm.SERVER_SHUTDOWN, action=pr.LeaveRequest.DISCONNECT)
        await self._players.close()
        await asyncio.gather(*(s.aclose(leave) for s in list(self._sessions)), return_exceptions=True)  # logged
        self._sessions.clear()
        for name in [room.name for room in self.registry.rooms()]:
            self.registry.delete_room(name, pm.SERVER_SHUTDOWN)
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """``ws://host:port``, what ``Room.connect`` takes."""
        return f"ws://{self._netloc}"

    @property
    def http_url(self) -> str:
        """``http://host:port``, what ``livekit.api.LiveKitAPI`` takes."""
        return f"http://{self._netloc}"

    @property
    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port}"

    # -- tokens -------------------------------------------------------------------------------------------------

    def _verify(self, token: str | None) -> Claims | None:
        if not token:
            return None
        try:
            return self._verifier.verify(token)
        except (jwt.PyJWTError, ValueError) as exc:
            logger.info("refused a token: %s", type(exc).__name__)
            return None

    # -- HTTP handlers ------------------------------------------------------------------------------------------

    async def _validate(self, request: web.Request) -> web.Response:
        claims = self._verify(bearer_token(request.headers, request.query))
        if claims is None or claims.video is None or not claims.video.room_join:
            return web.Response(status=401, text="invalid token")
        if claims.identity in self._rejected:
            return web.Response(status=401, text="join refused")
        return web.Response(text="success")

    async def _signal(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            return await self._signal_inner(request)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _signal_inner(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=_MAX_FRAME, timeout=2.0)
        if not ws.can_prepare(request).ok:
            return web.Response(status=404, text="not a websocket upgrade")
        single_pc = request.path.startswith("/rtc/v1")
        token = bearer_token(request.headers, request.query)
        claims = self._verify(token)
        if claims is None or token is None:
            return web.Response(status=401, text="invalid token")
        expires_at = float(jwt.decode(token, options={"verify_signature": False}).get("exp", 0))
        video = claims.video
        if video is None or not video.room_join or not video.room:
            return web.Response(status=401, text="permission denied: no room_join grant")
        if not claims.identity:
            return web.Response(status=400, text="identity cannot be empty")
        try:
            if single_pc:
                encoded = request.query.get("join_request")
                if encoded is None:
                    raise BadRequest("missing join_request")
                join = decode_join_request(encoded)
            else:
                join = legacy_join_request(request.query)
        except BadRequest as exc:
            return web.Response(status=400, text=str(exc))
        status = self._take_refusal(claims.identity)
        if status is not None:
            logger.info("refused a %s of %s with %d", "resume" if join.reconnect else "join", claims.identity, status)
            return web.Response(status=status, text="refused by refuse_joins")
        await ws.prepare(request)
        self._rejected.discard(claims.identity)
        if join.reconnect:
            await self._resume(ws, request, video.room, claims.identity, join.participant_sid, expires_at)
        else:
            await self._join(ws, request, video.room, claims, join, single_pc=single_pc, expires_at=expires_at)
        return ws

    async def _join(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        room: str,
        claims: Claims,
        join: pr.JoinRequest,
        *,
        single_pc: bool,
        expires_at: float,
    ) -> None:
        video = claims.video
        assert video is not None
        now = time.time()
        kind = PARTICIPANT_KINDS.get(claims.kind or "standard", pm.ParticipantInfo.STANDARD)
        attributes = dict(claims.attributes or {})
        attributes.update(join.participant_attributes)
        info = pm.ParticipantInfo(
            sid=new_sid("PA"),
            identity=claims.identity,
            name=claims.name,
            metadata=join.metadata or claims.metadata,
            attributes=attributes,
            state=pm.ParticipantInfo.JOINED,
            joined_at=int(now),
            joined_at_ms=int(now * 1000),
            kind=kind,
            permission=pm.ParticipantPermission(
                can_subscribe=video.can_subscribe,
                can_publish=video.can_publish,
                can_publish_data=video.can_publish_data,
                can_update_metadata=bool(video.can_update_own_metadata),
                hidden=bool(video.hidden),
                recorder=bool(video.recorder),
                agent=kind == pm.ParticipantInfo.AGENT,
                can_subscribe_metrics=bool(video.can_subscribe_metrics),
            ),
            client_protocol=join.client_info.client_protocol,
        )
        participant = Participant(room=room, info=info)
        session = Session(
            self.registry,
            self._config,
            participant,
            single_pc=single_pc,
            can_update_metadata=bool(video.can_update_own_metadata),
            router=self.router,
            auto_subscribe=join.connection_settings.auto_subscribe if join.HasField("connection_settings") else True,
        )
        session.token_expires_at = expires_at
        participant.sink = session
        self._sessions = {s for s in self._sessions if not s.finished}
        self._sessions.add(session)
        self.registry.join(participant)
        await session.join(ws, request, join)

    async def _resume(
        self, ws: web.WebSocketResponse, request: web.Request, room: str, identity: str, sid: str, expires_at: float
    ) -> None:
        participant = self.registry.participant(room, identity)
        session = participant.sink if participant is not None else None
        if not isinstance(session, Session) or session.closed or (sid and sid != session.participant.sid):
            # also a session the server ended while its socket was down (removed, room deleted): as LiveKit, the
            # client is not told why but asked for a full reconnect, which joins anew
            logger.info("%s tried to resume an unknown session; asking for a full reconnect", identity)
            leave = pr.LeaveRequest(can_reconnect=True, reason=pm.STATE_MISMATCH, action=pr.LeaveRequest.RECONNECT)
            await ws.send_bytes(pr.SignalResponse(leave=leave).SerializeToString())
            await ws.close()
            return
        session.token_expires_at = expires_at
        await session.resume(ws, request)

    def _take_refusal(self, identity: str) -> int | None:
        refusal = self._refusal
        if refusal is None or (refusal.identity is not None and refusal.identity != identity):
            return None
        refusal.count -= 1
        if refusal.count <= 0:
            self._refusal = None
        if refusal.status == 401:
            self._rejected.add(identity)
        return refusal.status

    # -- fault injection and inspection --------------------------------------------------------------------------

    def refuse_joins(self, count: int = 1, status: int = 503, identity: str | None = None) -> None:
        """Answer the next ``count`` joins and resumes (of ``identity``, or anyone) with HTTP ``status``.

        After a refused fresh join the SDK calls validate: it answers 401 too when ``status`` is 401, which makes
        the SDK give up at once (JOIN_FAILURE); other statuses make it retry.
        """
        if count < 0 or not 400 <= status <= 599:
            raise ValueError("count must be >= 0 and status an HTTP error status")
        self._refusal = _Refusal(count, status, identity) if count else None

    async def drop_signal(self, identity: str) -> None:
        """Abort ``identity``'s signal socket (no close frame, no leave): the SDK resumes."""
        self._session(identity).drop_signal()

    async def leave(self, identity: str, reason: str = "unknown", *, action: str = "disconnect") -> None:
        """Send a server-initiated leave. ``reason`` is our vocabulary; ``action`` is disconnect, resume or reconnect.

        ``disconnect`` ends the session (others see the participant leave), ``resume`` closes the socket and keeps
        the session for the client's resume, ``reconnect`` ends the session and the client joins again.
        """
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"unknown disconnect reason {reason!r}")
        if action not in LEAVE_ACTIONS:
            raise ValueError(f"unknown leave action {action!r}")
        leave = pr.LeaveRequest(
            reason=DISCONNECT_REASONS[reason], action=LEAVE_ACTIONS[action], can_reconnect=action != "disconnect"
        )
        session = self._session(identity)
        if action == "resume":
            session.end_signal(leave)
        else:
            self.registry.kick(session.participant, leave)

    async def delete_room(self, room: str) -> None:
        """Everyone in ``room`` gets leave(room_deleted); the room is gone."""
        self.registry.delete_room(room, DISCONNECT_REASONS["room_deleted"])

    async def set_connection_quality(self, identity: str, quality: str) -> None:
        """Send everyone in ``identity``'s room a ConnectionQualityUpdate (excellent, good, poor or lost)."""
        if quality not in CONNECTION_QUALITIES:
            raise ValueError(f"quality must be one of {sorted(CONNECTION_QUALITIES)}, not {quality!r}")
        participant = self.registry.find(identity)
        self.registry.set_quality(participant, CONNECTION_QUALITIES[quality], QUALITY_SCORES[quality])

    async def refresh_token(self, identity: str, ttl: float = 600) -> str:
        """Push a refresh_token to ``identity`` now (the SDK emits ``token_refreshed``); returns the token."""
        return self._session(identity).refresh_token(ttl)

    async def add_participant(
        self,
        room: str,
        identity: str,
        name: str | None = None,
        kind: str | None = None,
        metadata: str | None = None,
        attributes: Mapping[str, str] | None = None,
        *,
        audio: str | None = None,
        video: str | None = None,
    ) -> None:
        """Add a synthetic participant (no client behind it, state ACTIVE), announced to the room.

        With ``audio`` (``"tone:<hz>"`` or a 16-bit PCM WAV file path, looped) and / or ``video`` (``"pattern"``) it
        publishes a microphone / camera track, encoded here in real time (Opus, VP8 320x180 at 15 fps) and forwarded
        to subscribers like a client's. A bad spec raises ValueError before anyone is added.
        """
        if kind is not None and kind not in PARTICIPANT_KINDS:
            raise ValueError(f"unknown participant kind {kind!r}")
        if video not in (None, "pattern"):
            raise ValueError(f"unknown synthetic video {video!r}: the only one is 'pattern'")
        samples = read_audio(audio) if audio is not None else None
        now = time.time()
        info = pm.ParticipantInfo(
            sid=new_sid("PA"),
            identity=identity,
            name=name or "",
            metadata=metadata or "",
            attributes=dict(attributes or {}),
            state=pm.ParticipantInfo.ACTIVE,
            joined_at=int(now),
            joined_at_ms=int(now * 1000),
            kind=PARTICIPANT_KINDS[kind or "standard"],
            permission=pm.ParticipantPermission(
                can_subscribe=True, can_publish=True, can_publish_data=True, agent=kind == "agent"
            ),
        )
        participant = Participant(room=room, info=info)
        self.registry.join(participant)
        if samples is not None:
            player = play_audio(self._synthetic_source(participant, "audio"), samples)
            self._players.spawn(player, f"audio of {participant.identity}")
        if video is not None:
            self._players.spawn(play_video(self._synthetic_source(participant, "video")), f"video of {identity}")

    def _synthetic_source(self, participant: Participant, kind: str) -> Source:
        audio = kind == "audio"
        track = pm.TrackInfo(
            sid=new_sid("TR"),
            type=pm.AUDIO if audio else pm.VIDEO,
            name="tone" if audio else "pattern",
            source=pm.TrackSource.MICROPHONE if audio else pm.TrackSource.CAMERA,
            mime_type="audio/opus" if audio else "video/VP8",
            width=0 if audio else 320,
            height=0 if audio else 180,
        )
        self.registry.publish_track(participant, track)
        source = Source(track.sid, participant.sid, "audio" if audio else "video", "microphone" if audio else "camera")
        source.mime_type = track.mime_type
        self.router.publish(participant, source)
        return source

    async def remove_participant(self, room: str, identity: str) -> None:
        """Remove a participant (synthetic or not); a real one gets leave(participant_removed)."""
        participant = self.registry.participant(room, identity)
        if participant is None:
            raise LookupError(f"no participant {identity!r} in room {room!r}")
        leave = pr.LeaveRequest(reason=DISCONNECT_REASONS["participant_removed"], action=pr.LeaveRequest.DISCONNECT)
        self.registry.kick(participant, leave)

    async def stall_media(self, identity: str, source: str | None = None, *, mode: str = "no_packets") -> None:
        """Stop forwarding ``identity``'s ``source`` track (``"microphone"``, ``"camera"``...; None: every track) to
        everyone, without unpublish or mute: the publisher keeps sending, `received` keeps counting, subscribers get
        nothing (``mode="no_packets"``). ``mode="no_frames"`` (a ``"camera"`` or ``"screen_share"`` track in VP8)
        freezes the video instead: packets keep arriving, but each frame is one no decoder accepts. The stall is on
        the identity and source: a track published later (a republish, a rejoin) is stalled too, until
        `resume_media`. ``LookupError`` while there is no such participant; ``ValueError`` for a bad source or mode.
        """
        names = self._sources_of(identity, source)
        if mode not in STALL_MODES:
            raise ValueError(f"mode must be one of {list(STALL_MODES)}, not {mode!r}")
        if mode == "no_frames" and source not in ("camera", "screen_share"):
            raise ValueError(
                f"mode 'no_frames' freezes a video track: source must be 'camera' or 'screen_share', not {source!r}"
            )
        self.router.stall(identity, names, "no_frames" if mode == "no_frames" else "no_packets")

    async def resume_media(self, identity: str, source: str | None = None) -> None:
        """Forward ``identity``'s ``source`` track (None: every track) again after `stall_media`; video subscribers
        get a keyframe soon (the publisher is asked for one), so their decoders recover. Errors as `stall_media`."""
        self.router.resume(identity, self._sources_of(identity, source))

    def _sources_of(self, identity: str, source: str | None) -> tuple[str, ...]:
        if source is not None and source not in TRACK_SOURCES:
            raise ValueError(f"source must be one of {list(TRACK_SOURCES)} or None (every track), not {source!r}")
        self.registry.find(identity)
        return TRACK_SOURCES if source is None else (source,)

    def pause_pings(self, identity: str, paused: bool = True) -> None:
        """Stop (or resume) answering ``identity``'s pings: the client times out and resumes."""
        self._session(identity).pings_paused = paused

    def rooms(self) -> list[str]:
        """Names of the open rooms."""
        return [room.name for room in self.registry.rooms()]

    def participants(self, room: str) -> list[str]:
        """Identities in ``room``, in join order (empty if there is no such room)."""
        found = self.registry.room(room)
        return list(found.participants) if found else []

    def received(self, identity: str, room: str | None = None) -> list[ReceivedTrack]:
        """What the server receives from each track ``identity`` publishes now (in ``room`` if given), in order.

        Per track: its source and kind, RTP packets, encoded frames, keyframes, when the last packet arrived and,
        for audio, the level in dBFS. Counts are per track: they start at its publish and go on across the SDK's
        resume; a track published again (after an unpublish, the SDK's full restart or a rejoin: a new session) is
        a new track whose counts start at zero, and tracks no longer published are not listed. An empty list: the
        participant is there and publishes nothing. ``LookupError`` while there is no such participant (not joined
        yet, or gone): `wait_joined` and `wait_heard` wait for one.
        """
        try:
            participant = self.registry.find(identity, room)
        except LookupError as exc:
            raise LookupError(f"{exc} (not joined yet, or gone): wait_joined() waits for one") from None
        return self.router.received(participant)

    async def wait_joined(self, identity: str, timeout: float | None = 10) -> None:
        """Return once ``identity`` is in a room (at once if it is); ``TimeoutError`` after ``timeout`` seconds
        (None: no limit), naming the rooms and who is in them."""

        def joined() -> bool | None:
            return True if self._present(identity) else None

        def failure() -> str:
            return f"{identity!r} did not join within {timeout:g} s; {self._who_is_here()}"

        await self._waits.until(joined, timeout, failure)

    async def wait_heard(
        self, identity: str, frames: int = 50, min_dbfs: float = -50, timeout: float | None = 10
    ) -> ReceivedTrack:
        """The first audio track of ``identity`` the server has received ``frames`` frames of (20 ms each with
        Opus) at a level of ``min_dbfs`` or more (the latest packets'), waiting for them (and for ``identity`` to
        join) up to ``timeout`` seconds (None: no limit). The counts are `received`'s: per track, so after a
        rejoin the new track needs its own ``frames``. ``TimeoutError`` says what the server got instead."""
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames must be an int >= 1, not {frames!r}")
        if isinstance(min_dbfs, bool) or not isinstance(min_dbfs, (int, float)) or not -127 <= min_dbfs <= 0:
            raise ValueError(f"min_dbfs must be a level between -127 and 0 dBFS, not {min_dbfs!r}")

        def heard() -> ReceivedTrack | None:
            for track in self._audio_of(identity):
                level = track.audio_level_dbfs
                if track.frames >= frames and level is not None and level >= min_dbfs:
                    return track
            return None

        def failure() -> str:
            missed = f"{identity!r} was not heard within {timeout:g} s ({frames} frames at {min_dbfs:g} dBFS or more)"
            if not self._present(identity):
                return f"{missed}: it is in no room; {self._who_is_here()}"
            tracks = self._audio_of(identity)
            if not tracks:
                return f"{missed}: it publishes no audio track"
            got = "; ".join(
                f"{t.source} {t.track_sid}: {t.frames} frames, "
                + ("no level" if t.audio_level_dbfs is None else f"{t.audio_level_dbfs:.1f} dBFS")
                for t in tracks
            )
            return f"{missed}; its audio: {got}"

        return await self._waits.until(heard, timeout, failure)

    def _present(self, identity: str) -> bool:
        return any(identity in room.participants for room in self.registry.rooms())

    def _audio_of(self, identity: str) -> list[ReceivedTrack]:
        if not self._present(identity):
            return []
        return [t for t in self.router.received(self.registry.find(identity)) if t.kind == "audio"]

    def _who_is_here(self) -> str:
        rooms = self.registry.rooms()
        if not rooms:
            return "no room is open"
        return "in the rooms: " + "; ".join(f"{r.name}: {', '.join(r.participants) or 'nobody'}" for r in rooms)

    def _session(self, identity: str) -> Session:
        participant = self.registry.find(identity)
        if not isinstance(participant.sink, Session):
            raise LookupError(f"participant {identity!r} has no client session")
        return participant.sink
