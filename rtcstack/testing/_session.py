"""One client's session: its participant, its media (negotiation, uplink, downlink) and its signal socket.

A session outlives its websocket: a dropped socket leaves it detached until the client resumes on a new one (or
``departure_timeout`` passes and the participant leaves). Requests are dispatched by a table, from the request's
field to the unit that handles it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from .._tasks import Tasks
from ._data_endpoint import DataRelay, DataTrackEndpoint
from ._data_tracks import LABEL as DATA_TRACK_LABEL
from ._downlink import Downlink
from ._media import CodecRefused, MalformedDescription
from ._negotiation import Negotiation, PeerEvents
from ._rooms import Participant, RoomRegistry
from ._router import MediaRouter
from ._scenarios import Scenarios
from ._signal import SERVER_VERSION, Channel, server_info
from ._uplink import Uplink
from ._wire import encode_response

__all__ = ["Session", "SessionConfig"]

logger = logging.getLogger("rtcstack.testing")


@dataclass(frozen=True)
class SessionConfig:
    """Server-wide settings a session needs."""

    ping_interval: int
    ping_timeout: int
    departure_timeout: float
    token_refresh_interval: float | None
    mint: Callable[[Session, float], str]
    """Mints a fresh token for a session's claims, with this ttl in seconds."""


class Session:
    """The server side of one client: participant, media, the current signal socket, pings and token refresh."""

    def __init__(
        self,
        registry: RoomRegistry,
        config: SessionConfig,
        participant: Participant,
        *,
        single_pc: bool,
        can_update_metadata: bool,
        router: MediaRouter,
        auto_subscribe: bool = True,
    ) -> None:
        self.registry = registry
        self.config = config
        self.participant = participant
        self.single_pc = single_pc
        self.can_update_metadata = can_update_metadata
        self.router = router
        self.pings_paused = False
        self.closed = False
        self.token_expires_at = 0.0
        """When the token of the latest join or resume expires (epoch s): a pushed token lasts at least as long."""
        self._channel: Channel | None = None
        self._departure: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._tasks = Tasks(repr(self), logger)
        self._closer = Tasks(repr(self), logger)
        """Holds the closing task (which closes `_tasks`); its failure is logged by `_shutdown` itself."""
        self._scenarios = Scenarios(participant, registry, self.drop_signal)
        self._data = DataRelay(
            participant, registry, DataTrackEndpoint(participant, registry, self.send, self._send_frame)
        )
        self.uplink = Uplink(participant, registry, router, self.send)
        events = PeerEvents(
            lambda: registry.set_state(participant, pm.ParticipantInfo.ACTIVE),
            self._data.received,
            self.uplink.inbound,
            self.uplink.inbound_ended,
            lambda outlet: self.downlink.refused(outlet),
            lambda: self._fail(pm.UNKNOWN_REASON),
        )
        self.negotiation = Negotiation(participant.identity, single_pc=single_pc, send=self.send, events=events)
        self.downlink = Downlink(
            participant, registry, router, self.negotiation, self.send, auto_subscribe=auto_subscribe
        )
        self._dispatch: dict[str, Callable[[Any], object]] = {
            "ping_req": self._pong,
            "ping": self._pong_legacy,
            "offer": self.negotiation.answer,
            "answer": self.negotiation.accept_answer,
            "trickle": self.negotiation.trickle,
            "add_track": self.uplink.add_track,
            "mute": lambda mute: registry.set_track_muted(participant, mute.sid, mute.muted),
            "update_metadata": self._update_metadata,
            "leave": self._leave,
            "simulate": self._scenarios.play,
            "subscription": self.downlink.update_subscription,
            "track_setting": self.downlink.update_track_settings,
            "store_data_blob_request": self._unsupported,
            "get_data_blob_request": self._unsupported,
        }

    @property
    def finished(self) -> bool:
        """Closed, with its socket and peer connections closed too."""
        return self._closing is not None and self._closing.done()

    def __repr__(self) -> str:
        return f"<Session {self.participant.identity} {self.participant.sid} in {self.participant.room}>"

    # -- Sink ------------------------------------------------------------------------------------------------

    def send(self, message: pr.SignalResponse) -> None:
        if self._channel is not None and not self.closed:
            self._channel.put(encode_response(message))

    def send_data(self, packet: pm.DataPacket) -> None:
        """Send a DataPacket on the client's ``_reliable`` or ``_lossy`` data channel (by its kind), as LiveKit does."""
        label = "_lossy" if packet.kind == pm.DataPacket.LOSSY else "_reliable"
        self.negotiation.send_data(label, packet.SerializeToString())

    def close(self, leave: pr.LeaveRequest | None) -> None:
        """Send ``leave`` (if any), close the socket, then the media. Idempotent; `aclose` waits for it."""
        if self.closed:
            return
        if leave is not None:
            self.send(pr.SignalResponse(leave=leave))
        self.closed = True
        self._cancel_departure()
        self._data.tracks.close()
        self._scenarios.close()
        self.negotiation.stop()
        self.downlink.close()
        self.uplink.close()
        if self._channel is not None:
            self._channel.finish()
        self._closing = self._closer.spawn(self._shutdown(self._channel), "closing")

    async def aclose(self, leave: pr.LeaveRequest | None = None) -> None:
        """Close (sending ``leave`` if given) and wait until the socket and the peer connections are closed."""
        self.close(leave)
        if self._closing is not None:
            await asyncio.shield(self._closing)

    # -- faults -------------------------------------------------------------------------------------------------

    def drop_signal(self) -> None:
        """Abort the signal socket; the session stays, waiting for a resume."""
        if self._channel is not None:
            self._channel.abort()

    def end_signal(self, leave: pr.LeaveRequest) -> None:
        """Send ``leave`` then close the socket, keeping the session (leave with action RESUME)."""
        if self._channel is not None:
            self.send(pr.SignalResponse(leave=leave))
            self._channel.finish()

    def refresh_token(self, ttl: float | None = None) -> str:
        """Push a token lasting ``ttl`` s; by default as LiveKit: 10 minutes, or longer when the client's own token
        lasts longer (and past the next push)."""
        if ttl is None:
            interval = self.config.token_refresh_interval or 0.0
            ttl = max(600.0, interval * 2, self.token_expires_at - time.time())
        token = self.config.mint(self, ttl)
        self.send(pr.SignalResponse(refresh_token=token))
        return token

    # -- serving ------------------------------------------------------------------------------------------------

    async def join(self, ws: web.WebSocketResponse, request: web.Request, join: pr.JoinRequest) -> None:
        """Serve a fresh join on ``ws``: JoinResponse, the answer to the join's offer, then the request loop."""
        channel = self._channel = Channel(ws, request, repr(self))
        room = self.registry.room(self.participant.room)
        response = pr.JoinResponse(
            room=room.snapshot() if room else None,
            participant=self.participant.info,
            other_participants=self.registry.others(self.participant),
            server_version=SERVER_VERSION,
            subscriber_primary=not self.single_pc,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            server_info=server_info(),
        )
        self.send(pr.SignalResponse(join=response))
        if self.downlink.auto_subscribe:
            for source in self.router.available(self.participant):
                self.downlink.attach(source)
        await self.negotiation.join(join.publisher_offer if join.HasField("publisher_offer") else None)
        if self.closed:  # replaced or removed while answering: close what was made after _shutdown looked
            await self.negotiation.close_peers()
        elif self.config.token_refresh_interval is not None:
            self.refresh_token()
            self._refresher = self._tasks.spawn(
                self._refresh_periodically(self.config.token_refresh_interval), "refresh"
            )
        await self._serve(channel)

    async def resume(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        """Serve a resume on ``ws``: ReconnectResponse, then the request loop (the ICE-restart offer comes in it)."""
        self._cancel_departure()
        if self._channel is not None:
            self._channel.abort()
        channel = self._channel = Channel(ws, request, repr(self))
        drop, self._scenarios.drop_on_resume = self._scenarios.drop_on_resume, None
        if drop == "disconnect_signal_on_resume_no_messages":
            channel.abort()
        last = self._data.sequence.last
        self.send(pr.SignalResponse(reconnect=pr.ReconnectResponse(server_info=server_info(), last_message_seq=last)))
        # As LiveKit does after a resume: the full roster, so the SDK does not synthesize departures of the
        # participants it did not hear from while the socket was down.
        self.send(pr.SignalResponse(update=pr.ParticipantUpdate(participants=self.registry.others(self.participant))))
        if drop == "disconnect_signal_on_resume":
            channel.finish()
        elif self.config.token_refresh_interval is not None:
            self.refresh_token()  # as LiveKit does after every resume
        logger.debug("%r resumed", self)
        self.negotiation.resumed()
        await self._serve(channel)

    async def _serve(self, channel: Channel) -> None:
        try:
            async for request in channel.requests(self.config.ping_timeout):
                if not await self._handled(request, channel):
                    break
        finally:
            if self._channel is channel:
                channel.finish()
                self._channel = None
                if not self.closed:
                    self._start_departure()
            await channel.wait_closed()

    async def _handled(self, request: pr.SignalRequest, channel: Channel) -> bool:
        """Handle ``request``; False when the socket (or the session) ends because of it."""
        kind = request.WhichOneof("message")
        try:
            await self._handle(request)
            return True
        except CodecRefused as exc:  # no reconnect (STATE_MISMATCH): the same offer would be refused again
            logger.info("%r: refused an offer: %s", self, exc)
            self._fail(pm.STATE_MISMATCH)
        except MalformedDescription as exc:  # before aiortc saw it: the client sends what no peer can use
            logger.warning("%r: refused a malformed %s: %s", self, kind, exc)
            self._fail(pm.STATE_MISMATCH)
        except ValueError as exc:  # an SDP aiortc refuses: closed, as an undecodable frame is
            logger.info("%r: refused a %s: %s; closing the socket", self, kind, exc)
            channel.finish()
        except Exception as exc:  # a bug of ours: this session ends, the server goes on
            logger.error("%r: %s handling %s: %s; closing the session", self, type(exc).__name__, kind, exc)
            self._fail(pm.UNKNOWN_REASON)
        return False

    async def _handle(self, request: pr.SignalRequest) -> None:
        kind = request.WhichOneof("message")
        handler = self._dispatch.get(kind or "")
        if handler is not None:
            result = handler(getattr(request, kind or ""))
            if inspect.isawaitable(result):
                await result
        elif DataTrackEndpoint.handles(kind):
            self._data.tracks.handle(request)
        else:
            logger.debug("%r: ignored %s", self, kind)

    def _fail(self, reason: pm.DisconnectReason) -> None:
        """End this session with a final leave (no reconnect: the same request would fail again)."""
        self.registry.kick(self.participant, pr.LeaveRequest(reason=reason, action=pr.LeaveRequest.DISCONNECT))
        self.close(None)

    # -- requests -----------------------------------------------------------------------------------------------

    def _pong(self, ping: pr.Ping) -> None:
        if not self.pings_paused:
            now = int(time.time() * 1000)
            self.send(pr.SignalResponse(pong_resp=pr.Pong(last_ping_timestamp=ping.timestamp, timestamp=now)))

    def _pong_legacy(self, _: int) -> None:
        if not self.pings_paused:
            self.send(pr.SignalResponse(pong=int(time.time() * 1000)))

    def _leave(self, _: pr.LeaveRequest) -> None:
        logger.debug("%r left", self)
        self.registry.remove(self.participant, pm.CLIENT_INITIATED)
        self.close(None)

    def _unsupported(self, request: Any) -> None:
        self._respond(request.request_id, pr.RequestResponse.UNSUPPORTED_TYPE, "not supported by the loopback server")

    def _respond(self, request_id: int, reason: pr.RequestResponse.Reason, message: str = "") -> None:
        response = pr.RequestResponse(request_id=request_id, reason=reason, message=message)
        self.send(pr.SignalResponse(request_response=response))

    def _update_metadata(self, update: pr.UpdateParticipantMetadata) -> None:
        if not self.can_update_metadata:
            self._respond(update.request_id, pr.RequestResponse.NOT_ALLOWED, "does not have permission")
            return
        self.registry.update(
            self.participant,
            name=update.name or None,
            metadata=update.metadata or None,
            attributes=dict(update.attributes) or None,
        )
        self._respond(update.request_id, pr.RequestResponse.OK)

    # -- lifetime -----------------------------------------------------------------------------------------------

    async def _refresh_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.refresh_token()

    def _send_frame(self, frame: bytes) -> None:
        self.negotiation.send_data(DATA_TRACK_LABEL, frame)

    def _start_departure(self) -> None:
        self._departure = asyncio.get_running_loop().call_later(self.config.departure_timeout, self._depart)

    def _cancel_departure(self) -> None:
        if self._departure is not None:
            self._departure.cancel()
            self._departure = None

    def _depart(self) -> None:
        self._departure = None
        logger.debug("%r did not resume in %s s", self, self.config.departure_timeout)
        self.registry.remove(self.participant, pm.SIGNAL_CLOSE)
        self.close(None)

    async def _shutdown(self, channel: Channel | None) -> None:
        try:
            await self._tasks.close()
            if channel is not None:
                await channel.wait_closed()
            await self.negotiation.close()
        except Exception as exc:  # nobody awaits this once the participant left: said here, with its session
            logger.error("%r: %s while closing: %s", self, type(exc).__name__, exc)
