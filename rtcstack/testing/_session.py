"""One client's session: its participant, its peer connection(s) and the signal websocket it is attached to.

A session outlives its websocket: a dropped socket leaves it detached until the client resumes on a new one (or
``departure_timeout`` passes and the participant leaves). Messages are encoded when queued, so later changes to
the bookkeeping never alter what was already sent, and each socket has one writer task that keeps their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from ._data import CHANNEL_KINDS, ReliableSequence, forwarded, stamp
from ._data_endpoint import DataTrackEndpoint
from ._data_tracks import LABEL as DATA_TRACK_LABEL
from ._forward import Outlet, Source
from ._media import CodecRefused, MalformedDescription, MediaPeer, OfferedSection
from ._rooms import Participant, RoomRegistry, new_sid
from ._router import MediaRouter
from ._tables import TRACK_SOURCE_NAMES
from ._wire import BadRequest, decode_request, encode_response

__all__ = ["Session", "SessionConfig"]

logger = logging.getLogger("rtcstack.testing")

SERVER_VERSION = "1.9.0"
PROTOCOL_VERSION = 16
_FORWARDED_VIDEO = ("", "vp8", "h264")
"""Video codecs an AddTrackRequest may ask for (empty: the SDK's default, VP8)."""


@dataclass(frozen=True)
class SessionConfig:
    """Server-wide settings a session needs."""

    ping_interval: int
    ping_timeout: int
    departure_timeout: float
    token_refresh_interval: float | None
    mint: Callable[[Session, float], str]
    """Mints a fresh token for a session's claims, with this ttl in seconds."""


class _Channel:
    """One signal websocket: an ordered outbox drained by a writer task, which closes the socket at the end."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self._request = request
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.ending = False
        self._writer = asyncio.create_task(self._drain())

    def put(self, frame: bytes) -> None:
        if not self.ending:
            self._outbox.put_nowait(frame)

    def finish(self) -> None:
        """Close the socket once what is queued has been written."""
        if not self.ending:
            self.ending = True
            self._outbox.put_nowait(None)

    def abort(self) -> None:
        """Drop the connection at once: no close frame, nothing more written (a network failure, as seen)."""
        self.ending = True
        self._writer.cancel()
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    async def _drain(self) -> None:
        try:
            while (frame := await self._outbox.get()) is not None:
                await self.ws.send_bytes(frame)
        except ConnectionError:
            return
        await self.ws.close()


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
        self.auto_subscribe = auto_subscribe
        self.pings_paused = False
        self.closed = False
        self.token_expires_at = 0.0
        """When the token of the latest join or resume expires (epoch s): a pushed token lasts at least as long."""
        self._channel: _Channel | None = None
        self._publisher: MediaPeer | None = None
        self._subscriber: MediaPeer | None = None
        self._departure: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._drop_on_resume: str | None = None
        self._adding: dict[str, pm.TrackInfo] = {}
        """Tracks announced by AddTrackRequest whose media has not arrived yet, by client track id (cid)."""
        self._inbound: dict[str, str] = {}
        """mid -> track sid of what the client publishes."""
        self._outlets: dict[str, Outlet] = {}
        """track sid -> outlet of what the client is sent."""
        self._wanted: set[str] = set()
        """Tracks the client subscribed to whose media has not arrived yet (sent once it does)."""
        self._answering_join = False
        self._negotiation: asyncio.Handle | None = None
        self._awaiting_answer = False
        self._offer_again = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._reliable_sequence = ReliableSequence()
        self._data_tracks = DataTrackEndpoint(participant, registry, self.send, self._send_data_track_frame)

    @property
    def finished(self) -> bool:
        """Closed, with its socket and peer connections closed too."""
        return self._closing is not None and self._closing.done()

    def __repr__(self) -> str:
        return f"<Session {self.participant.identity} {self.participant.sid} in {self.participant.room}>"

    # -- Sink ---------------------------------------------------------------------------------------------------

    def send(self, message: pr.SignalResponse) -> None:
        if self._channel is not None and not self.closed:
            self._channel.put(encode_response(message))

    def close(self, leave: pr.LeaveRequest | None) -> None:
        """Send ``leave`` (if any), close the socket, then the media. Idempotent; `aclose` waits for it."""
        if self.closed:
            return
        if leave is not None:
            self.send(pr.SignalResponse(leave=leave))
        self.closed = True
        self._cancel_departure()
        self._data_tracks.close()
        if self._channel is not None:
            self._channel.finish()
        self._closing = asyncio.create_task(self._shutdown(self._channel))
        self._closing.add_done_callback(self._shutdown_done)

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

    def refresh_token(self, ttl: float) -> str:
        token = self.config.mint(self, ttl)
        self.send(pr.SignalResponse(refresh_token=token))
        return token

    # -- serving ------------------------------------------------------------------------------------------------

    async def join(self, ws: web.WebSocketResponse, request: web.Request, join: pr.JoinRequest) -> None:
        """Serve a fresh join on ``ws``: JoinResponse, the answer to the join's offer, then the request loop."""
        channel = self._attach(ws, request)
        room = self.registry.room(self.participant.room)
        response = pr.JoinResponse(
            room=room.snapshot() if room else None,
            participant=self.participant.info,
            other_participants=self.registry.others(self.participant),
            server_version=SERVER_VERSION,
            subscriber_primary=not self.single_pc,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            server_info=pm.ServerInfo(
                edition=pm.ServerInfo.Standard,
                version=SERVER_VERSION,
                protocol=PROTOCOL_VERSION,
                node_id="loopback",
            ),
        )
        self.send(pr.SignalResponse(join=response))
        self._answering_join = True
        if self.auto_subscribe:
            for source in self.router.available(self.participant):
                self.attach(source)
        if join.HasField("publisher_offer"):
            await self._answer(join.publisher_offer)
        if not self.single_pc:
            await self._offer_subscriber()
        self._answering_join = False
        # what the join's answer (or offer) could not carry: more m-lines to ask for, or a track that arrived while
        # it was being made
        peer = self._publisher if self.single_pc else self._subscriber
        if peer is not None and peer.unsent():
            self._negotiate()
        if self.closed:  # replaced or removed while answering: close what was made after _shutdown looked
            await self._close_peers()
        elif self.config.token_refresh_interval is not None:
            self.refresh_token(self._pushed_ttl())
            self._refresher = asyncio.create_task(self._refresh_periodically(self.config.token_refresh_interval))
        await self._serve(channel)

    async def resume(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        """Serve a resume on ``ws``: ReconnectResponse, then the request loop (the ICE-restart offer comes in it)."""
        self._cancel_departure()
        if self._channel is not None:
            self._channel.abort()
        channel = self._attach(ws, request)
        drop, self._drop_on_resume = self._drop_on_resume, None
        if drop == "disconnect_signal_on_resume_no_messages":
            channel.abort()
        self.send(
            pr.SignalResponse(
                reconnect=pr.ReconnectResponse(
                    server_info=pm.ServerInfo(
                        edition=pm.ServerInfo.Standard,
                        version=SERVER_VERSION,
                        protocol=PROTOCOL_VERSION,
                        node_id="loopback",
                    ),
                    last_message_seq=self._reliable_sequence.last,
                )
            )
        )
        # As LiveKit does after a resume: the full roster, so the SDK does not synthesize departures of the
        # participants it did not hear from while the socket was down.
        self.send(pr.SignalResponse(update=pr.ParticipantUpdate(participants=self.registry.others(self.participant))))
        if drop == "disconnect_signal_on_resume":
            channel.finish()
        elif self.config.token_refresh_interval is not None:
            self.refresh_token(self._pushed_ttl())  # as LiveKit does after every resume
        logger.debug("%r resumed", self)
        if self._subscriber is not None:
            # as LiveKit does, offer the subscriber connection again: an answer lost with the old socket would
            # otherwise leave its new tracks unsent for good
            self._awaiting_answer = self._offer_again = False
            self._negotiate()
        await self._serve(channel)

    def _attach(self, ws: web.WebSocketResponse, request: web.Request) -> _Channel:
        self._channel = _Channel(ws, request)
        return self._channel

    async def _serve(self, channel: _Channel) -> None:
        try:
            while not channel.ending:
                try:
                    msg = await channel.ws.receive(timeout=self.config.ping_timeout)
                except asyncio.TimeoutError:
                    logger.debug("%r: no message for %s s, dropping the socket", self, self.config.ping_timeout)
                    channel.abort()
                    break
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    logger.debug("%r: ignored a %s frame", self, msg.type.name)
                    continue
                try:
                    request = decode_request(msg.data)
                except BadRequest as exc:
                    logger.info("%r: %s; closing the socket", self, exc)
                    channel.finish()
                    break
                try:
                    await self._handle(request)
                except CodecRefused as exc:
                    logger.info("%r: refused an offer: %s", self, exc)
                    self._fail(pm.STATE_MISMATCH)
                    break
                except MalformedDescription as exc:  # before aiortc saw it: the client sends what no peer can use
                    logger.warning("%r: refused a malformed %s: %s", self, request.WhichOneof("message"), exc)
                    self._fail(pm.STATE_MISMATCH)
                    break
                except ValueError as exc:  # an SDP aiortc refuses: closed, as an undecodable frame is
                    logger.info("%r: refused a %s: %s; closing the socket", self, request.WhichOneof("message"), exc)
                    channel.finish()
                    break
                except Exception as exc:  # a bug of ours: this session ends, the server goes on
                    kind = request.WhichOneof("message")
                    logger.error("%r: %s handling %s: %s; closing the session", self, type(exc).__name__, kind, exc)
                    self._fail(pm.UNKNOWN_REASON)
                    break
        finally:
            if self._channel is channel:
                channel.finish()
                self._channel = None
                if not self.closed:
                    self._start_departure()
            await channel.wait_closed()

    def _fail(self, reason: pm.DisconnectReason) -> None:
        """End this session with a final leave (no reconnect: the same request would fail again)."""
        self.registry.kick(self.participant, pr.LeaveRequest(reason=reason, action=pr.LeaveRequest.DISCONNECT))
        self.close(None)

    # -- requests -----------------------------------------------------------------------------------------------

    async def _handle(self, request: pr.SignalRequest) -> None:
        kind = request.WhichOneof("message")
        if kind == "ping_req":
            if not self.pings_paused:
                now = int(time.time() * 1000)
                self.send(
                    pr.SignalResponse(pong_resp=pr.Pong(last_ping_timestamp=request.ping_req.timestamp, timestamp=now))
                )
        elif kind == "ping":
            if not self.pings_paused:
                self.send(pr.SignalResponse(pong=int(time.time() * 1000)))
        elif kind == "offer":
            await self._answer(request.offer)
        elif kind == "answer":
            if self._subscriber is not None:
                await self._subscriber.accept_answer(request.answer.sdp)
                self._awaiting_answer = False
                if self._offer_again:
                    self._offer_again = False
                    self._negotiate()
        elif kind == "trickle":
            target = self._subscriber if request.trickle.target == pr.SUBSCRIBER else self._publisher
            if target is not None:
                await target.add_candidate(request.trickle.candidateInit)
        elif kind == "add_track":
            self._add_track(request.add_track)
        elif kind == "mute":
            self.registry.set_track_muted(self.participant, request.mute.sid, request.mute.muted)
        elif kind == "update_metadata":
            self._update_metadata(request.update_metadata)
        elif kind == "leave":
            logger.debug("%r left", self)
            self.registry.remove(self.participant, pm.CLIENT_INITIATED)
            self.close(None)
        elif kind == "simulate":
            self._simulate(request.simulate)
        elif kind == "subscription":
            self._update_subscription(request.subscription)
        elif DataTrackEndpoint.handles(kind):
            self._data_tracks.handle(request)
        elif kind == "track_setting":
            self._update_track_settings(request.track_setting)
        elif kind in ("store_data_blob_request", "get_data_blob_request"):
            request_id = getattr(request, kind).request_id
            self._respond(request_id, pr.RequestResponse.UNSUPPORTED_TYPE, "not supported by the loopback server")
        else:
            logger.debug("%r: ignored %s", self, kind)

    def _simulate(self, scenario: pr.SimulateScenario) -> None:
        """The server's part of ``Room.simulate_scenario``, as LiveKit plays it."""
        which = scenario.WhichOneof("scenario")
        logger.debug("%r: simulating %s", self, which)
        if which == "speaker_update":
            self._speak(True)
            self._timers.append(asyncio.get_running_loop().call_later(scenario.speaker_update, self._speak, False))
        elif which in ("node_failure", "migration"):
            self.drop_signal()
        elif which == "server_leave":
            leave = pr.LeaveRequest(reason=pm.SERVER_SHUTDOWN, action=pr.LeaveRequest.DISCONNECT)
            self.registry.kick(self.participant, leave)
        elif which in ("disconnect_signal_on_resume", "disconnect_signal_on_resume_no_messages"):
            self._drop_on_resume = which
        elif which == "leave_request_full_reconnect":
            leave = pr.LeaveRequest(reason=pm.UNKNOWN_REASON, action=pr.LeaveRequest.RECONNECT, can_reconnect=True)
            self.registry.kick(self.participant, leave)

    def _speak(self, active: bool) -> None:
        """As LiveKit: a speaker update goes to the speaker and to those subscribed to one of its tracks."""
        speaker = pm.SpeakerInfo(sid=self.participant.sid, level=0.9 if active else 0.0, active=active)
        message = pr.SignalResponse(speakers_changed=pr.SpeakersChanged(speakers=[speaker]))
        room = self.registry.room(self.participant.room)
        tracks = {track.sid for track in self.participant.info.tracks}
        for other in list(room.participants.values()) if room is not None else []:
            if other is self.participant or (isinstance(other.sink, Session) and other.sink.receives(tracks)):
                other.send(message)

    def receives(self, track_sids: set[str]) -> bool:
        """Whether the client is sent one of these tracks."""
        return not self._outlets.keys().isdisjoint(track_sids)

    def _respond(self, request_id: int, reason: pr.RequestResponse.Reason, message: str = "") -> None:
        self.send(
            pr.SignalResponse(
                request_response=pr.RequestResponse(request_id=request_id, reason=reason, message=message)
            )
        )

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

    def _add_track(self, add: pr.AddTrackRequest) -> None:
        logger.debug("%r: add_track %s", self, str(add).replace("\n", " "))
        refused = [c.codec for c in add.simulcast_codecs if c.codec.lower() not in _FORWARDED_VIDEO]
        if add.type == pm.VIDEO and refused:
            message = f"codec {refused[0]} is not supported by the loopback server (it forwards VP8, H264 and Opus)"
            logger.info("%r: refused track %s: %s", self, add.cid, message)
            refusal = pr.RequestResponse(reason=pr.RequestResponse.UNSUPPORTED_TYPE, message=message, add_track=add)
            self.send(pr.SignalResponse(request_response=refusal))
            return
        track = pm.TrackInfo(
            sid=add.sid or new_sid("TR"),
            type=add.type,
            name=add.name,
            muted=add.muted,
            width=add.width,
            height=add.height,
            simulcast=len(add.layers) > 1,
            disable_dtx=add.disable_dtx,
            source=add.source,
            layers=add.layers,
            stereo=add.stereo,
            disable_red=add.disable_red,
            encryption=add.encryption,
            stream=add.stream,
            audio_features=_audio_features(add),
            backup_codec_policy=add.backup_codec_policy,
            packet_trailer_features=add.packet_trailer_features,
            codecs=[
                pm.SimulcastCodecInfo(mime_type=_mime(add.type, c.codec), cid=c.cid, layers=c.layers)
                for c in add.simulcast_codecs
            ],
        )
        if add.simulcast_codecs and add.simulcast_codecs[0].codec:
            track.mime_type = track.codecs[0].mime_type
        elif add.type == pm.AUDIO:
            track.mime_type = "audio/opus"  # what the server receives: it answers without RED
        self._adding[add.cid] = track
        self.send(pr.SignalResponse(track_published=pr.TrackPublishedResponse(cid=add.cid, track=track)))
        self.registry.publish_track(self.participant, track)

    def _update_subscription(self, update: pr.UpdateSubscription) -> None:
        """Subscribe or unsubscribe, as LiveKit does: a track announced whose media has not arrived yet is sent once
        it does; a track the room does not have gets a SubscriptionResponse with SE_TRACK_NOTFOUND."""
        sids = list(update.track_sids)
        for tracks in update.participant_tracks:
            sids.extend(tracks.track_sids)
        for sid in sids:
            source = self.router.source(sid)
            if not update.subscribe:
                self._wanted.discard(sid)
                self.detach(sid)
            elif source is not None:
                self.attach(source)
            elif self._track_info(sid) is not None:
                self._wanted.add(sid)
            else:
                logger.info("%r: cannot subscribe to %s: no such track", self, sid)
                refusal = pr.SubscriptionResponse(track_sid=sid, err=pm.SE_TRACK_NOTFOUND)
                self.send(pr.SignalResponse(subscription_response=refusal))

    def wants(self, track_sid: str) -> bool:
        """Whether the client is to be sent ``track_sid`` when its media arrives (auto-subscribe, or it asked)."""
        return self.auto_subscribe or track_sid in self._wanted

    def _update_track_settings(self, settings: pr.UpdateTrackSettings) -> None:
        """Enable / disable and pick the layer (by quality, or by the size the subscriber shows it at)."""
        logger.debug("%r: track settings %s", self, str(settings).replace("\n", " "))
        for sid in settings.track_sids:
            outlet = self._outlets.get(sid)
            if outlet is None:
                continue
            outlet.set_enabled(not settings.disabled and settings.quality != pm.OFF)
            quality = settings.quality if settings.quality != pm.OFF else pm.HIGH
            if settings.width:
                layers = sorted(self._track_layers(sid), key=lambda layer: layer.quality)
                wide = [layer.quality for layer in layers if layer.width >= settings.width]
                quality = wide[0] if wide else (layers[-1].quality if layers else pm.HIGH)
            outlet.set_quality(quality)

    def _track_layers(self, track_sid: str) -> list[pm.VideoLayer]:
        track = self._track_info(track_sid)
        return list(track.layers) if track is not None else []

    def _track_info(self, track_sid: str) -> pm.TrackInfo | None:
        """The track ``track_sid`` another participant of the room announced, if any."""
        room = self.registry.room(self.participant.room)
        for participant in room.participants.values() if room else ():
            for track in participant.info.tracks if participant is not self.participant else ():
                if track.sid == track_sid:
                    return track
        return None

    # -- media --------------------------------------------------------------------------------------------------

    def send_data(self, packet: pm.DataPacket) -> None:
        """Send a DataPacket on the client's ``_reliable`` or ``_lossy`` data channel (by its kind), as LiveKit does."""
        peer = self._publisher if self.single_pc else self._subscriber
        if peer is not None and not self.closed:
            label = "_lossy" if packet.kind == pm.DataPacket.LOSSY else "_reliable"
            peer.send_data(label, packet.SerializeToString())

    def attach(self, source: Source) -> None:
        """Send ``source`` to the client: on the subscriber connection (legacy) or the single one."""
        if self.closed or source.closed or source.track_sid in self._outlets:
            return
        self._wanted.discard(source.track_sid)
        outlet = source.outlet(self.participant.identity)
        self._outlets[source.track_sid] = outlet
        stream_id = f"{source.owner_sid}|{source.track_sid}"
        logger.debug("%r subscribes to %r", self, source)
        if self.single_pc:
            self._publisher_peer().queue_outlet(outlet, stream_id)
        else:
            self._subscriber_peer().send_outlet(outlet, stream_id)
            if self._outlets.get(source.track_sid) is not outlet:  # refused at once
                return
        self._negotiate()
        self.router.subscribed(source.track_sid)

    def _outlet_refused(self, outlet: Outlet) -> None:
        """The client cannot receive ``outlet``'s codec: as LiveKit, the subscription ends with a SubscriptionResponse
        (SE_CODEC_UNSUPPORTED)."""
        sid = outlet.source.track_sid
        if self._outlets.get(sid) is outlet:
            del self._outlets[sid]
        outlet.source.drop(outlet)
        logger.info("%r: cannot subscribe to %s: it takes no %s", self, sid, outlet.source.mime_type)
        refusal = pr.SubscriptionResponse(track_sid=sid, err=pm.SE_CODEC_UNSUPPORTED)
        self.send(pr.SignalResponse(subscription_response=refusal))

    def detach(self, track_sid: str) -> None:
        """Stop sending the track ``track_sid`` to the client."""
        outlet = self._outlets.pop(track_sid, None)
        if outlet is None:
            return
        logger.debug("%r unsubscribes from %r", self, outlet.source)
        outlet.source.drop(outlet)
        peer = self._publisher if self.single_pc else self._subscriber
        if peer is not None:
            peer.remove_outlet(outlet)
        self._negotiate()

    def _negotiate(self) -> None:
        """Renegotiate once the current burst of changes is over (a join in progress does it itself)."""
        if self._answering_join or self.closed or self._negotiation is not None:
            return
        self._negotiation = asyncio.get_running_loop().call_soon(self._start_negotiation)

    def _start_negotiation(self) -> None:
        self._negotiation = None
        if self.closed:
            return
        if self.single_pc:
            # the client offers on the single connection: tell it how many more recvonly m-lines to add, which
            # also makes it offer now (our answer binds the waiting outlets)
            audios, videos = self._publisher_peer().missing_sections()
            need = pr.MediaSectionsRequirement(num_audios=audios, num_videos=videos)
            self.send(pr.SignalResponse(media_sections_requirement=need))
        elif self._awaiting_answer:
            self._offer_again = True
        else:
            self._spawn(self._offer_subscriber())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("%r: %s in a negotiation: %s; closing the session", self, type(exc).__name__, exc)
            if not self.closed:
                self._fail(pm.UNKNOWN_REASON)

    def _on_inbound(self, section: OfferedSection, mime_type: str) -> Source | None:
        """The client started sending a track on ``section``: the source its media goes to, once it is announced."""
        track = self._adding.pop(section.track_id, None)
        if track is None:  # no cid match (an SDK that names tracks differently): the oldest of the same kind
            track_type = pm.AUDIO if section.kind == "audio" else pm.VIDEO
            cid = next((c for c, t in self._adding.items() if t.type == track_type), None)
            track = self._adding.pop(cid) if cid is not None else None
        if track is None:
            logger.debug("%r: media on mid %s for no announced track", self, section.mid)
            return None
        self._inbound[section.mid] = track.sid
        for published in self.participant.info.tracks:  # the announced copy: announced again once published
            if published.sid == track.sid:
                published.mime_type = mime_type
                published.mid = section.mid
        kind: Literal["audio", "video"] = "audio" if section.kind == "audio" else "video"
        source = Source(track.sid, self.participant.sid, kind, TRACK_SOURCE_NAMES.get(track.source, "unknown"))
        source.mime_type = mime_type
        asyncio.get_running_loop().call_soon(self._publish_source, source)
        return source

    def _publish_source(self, source: Source) -> None:
        if not self.closed and not source.closed:
            self.registry.update(self.participant)  # announces the track's codec and mid, now known
            self.router.publish(self.participant, source)

    def _on_inbound_ended(self, mid: str) -> None:
        """The client stopped sending on ``mid``: it unpublished that track."""
        track_sid = self._inbound.pop(mid, None)
        if track_sid is None:
            return
        self.router.unpublish(track_sid)
        if self.registry.unpublish_track(self.participant, track_sid):
            self.send(pr.SignalResponse(track_unpublished=pr.TrackUnpublishedResponse(track_sid=track_sid)))

    def _send_data_track_frame(self, frame: bytes) -> None:
        peer = self._publisher if self.single_pc else self._subscriber
        if peer is not None and not self.closed:
            peer.send_data(DATA_TRACK_LABEL, frame)

    async def _answer(self, offer: pr.SessionDescription) -> None:
        sdp, mids = await self._publisher_peer().answer(offer.sdp)
        answer = pr.SessionDescription(type="answer", sdp=sdp, id=offer.id, mid_to_track_id=mids)
        self.send(pr.SignalResponse(answer=answer))

    async def _offer_subscriber(self) -> None:
        self._awaiting_answer = True
        sdp = await self._subscriber_peer().offer()
        self.send(pr.SignalResponse(offer=pr.SessionDescription(type="offer", sdp=sdp)))

    def _publisher_peer(self) -> MediaPeer:
        if self._publisher is None:
            self._publisher = self._new_peer("publisher", primary=self.single_pc)
        return self._publisher

    def _subscriber_peer(self) -> MediaPeer:
        if self._subscriber is None:
            self._subscriber = self._new_peer("subscriber", primary=True)
        return self._subscriber

    def _new_peer(self, role: str, *, primary: bool) -> MediaPeer:
        on_connected = self._on_primary_connected if primary else None
        if role == "publisher":
            return MediaPeer(
                f"{self.participant.identity}/{role}",
                on_connected=on_connected,
                on_data=self._relay_data,
                on_inbound=self._on_inbound,
                on_inbound_ended=self._on_inbound_ended,
                on_refused=self._outlet_refused,
            )
        return MediaPeer(
            f"{self.participant.identity}/{role}", on_connected=on_connected, on_refused=self._outlet_refused
        )

    def _relay_data(self, label: str, raw: bytes) -> None:
        """A packet the client published on data channel ``label``: stamp it as LiveKit does and pass it on."""
        if label == DATA_TRACK_LABEL:
            self._data_tracks.received(raw)
            return
        kind = CHANNEL_KINDS.get(label)
        sender = self.participant.info
        if kind is None or not sender.permission.can_publish_data:
            return
        try:
            packet = pm.DataPacket.FromString(raw)
        except DecodeError:
            logger.info("%r: dropped a data packet that is not a DataPacket", self)
            return
        if not self._reliable_sequence.fresh(packet, kind):
            return
        stamp(packet, kind, sender)
        if forwarded(packet, sender):
            self.registry.send_data(self.participant.room, packet, sender=self.participant)
        elif packet.WhichOneof("value") == "metrics":
            self.registry.send_metrics(self.participant.room, packet)

    def _on_primary_connected(self) -> None:
        self.registry.set_state(self.participant, pm.ParticipantInfo.ACTIVE)

    # -- lifetime -----------------------------------------------------------------------------------------------

    async def _refresh_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.refresh_token(self._pushed_ttl())

    def _pushed_ttl(self) -> float:
        """As LiveKit: 10 minutes, or longer when the client's own token lasts longer (and past the next push)."""
        interval = self.config.token_refresh_interval or 0.0
        return max(600.0, interval * 2, self.token_expires_at - time.time())

    def _start_departure(self) -> None:
        loop = asyncio.get_running_loop()
        self._departure = loop.call_later(self.config.departure_timeout, self._depart)

    def _cancel_departure(self) -> None:
        if self._departure is not None:
            self._departure.cancel()
            self._departure = None

    def _depart(self) -> None:
        self._departure = None
        logger.debug("%r did not resume in %s s", self, self.config.departure_timeout)
        self.registry.remove(self.participant, pm.SIGNAL_CLOSE)
        self.close(None)

    async def _shutdown(self, channel: _Channel | None) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._negotiation is not None:
            self._negotiation.cancel()
        for outlet in self._outlets.values():
            outlet.source.drop(outlet)
        self._outlets.clear()
        for track_sid in self._inbound.values():
            self.router.unpublish(track_sid)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if channel is not None:
            await channel.wait_closed()
        await self._close_peers()

    def _shutdown_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("%r: %s while closing: %s", self, type(exc).__name__, exc)

    async def _close_peers(self) -> None:
        for peer in (self._publisher, self._subscriber):
            if peer is not None:
                await peer.close()

    async def aclose(self, leave: pr.LeaveRequest | None = None) -> None:
        """Close (sending ``leave`` if given) and wait until the socket and the peer connections are closed."""
        self.close(leave)
        if self._closing is not None:
            await asyncio.shield(self._closing)


def _mime(kind: pm.TrackType, codec: str) -> str:
    """LiveKit's mime type for an AddTrackRequest codec name (``vp8`` -> ``video/VP8``, ``opus`` -> ``audio/opus``)."""
    if kind == pm.AUDIO:
        return f"audio/{codec.lower()}"
    return f"video/{codec.upper()}"


def _audio_features(add: pr.AddTrackRequest) -> list[pm.AudioTrackFeature]:
    """The request's audio features, with `TF_NO_DTX` added for `disable_dtx` as LiveKit does (the SDK reads DTX
    off from there)."""
    features = list(add.audio_features)
    if add.disable_dtx and pm.TF_NO_DTX not in features:
        features.append(pm.TF_NO_DTX)
    return features
