"""The peer connection(s) of one client and their offer/answer exchanges.

Single peer connection (``/rtc/v1``): the client offers; media for it waits for its next offer, which a
MediaSectionsRequirement asks for. Legacy (``/rtc``): a second, subscriber connection that the server offers on.
Changes are coalesced: one renegotiation once the current burst is over, none while a join makes its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from livekit.protocol import rtc as pr

from .._tasks import Tasks
from ._forward import Outlet, Source
from ._media import MediaPeer, OfferedSection

__all__ = ["Negotiation", "PeerEvents"]

logger = logging.getLogger("rtcstack.testing")


@dataclass(frozen=True)
class PeerEvents:
    """What the session hears from its peer connections."""

    connected: Callable[[], None]
    """The primary connection connected."""
    data: Callable[[str, bytes], None]
    inbound: Callable[[OfferedSection, str], Source | None]
    inbound_ended: Callable[[str], None]
    refused: Callable[[Outlet], None]
    failed: Callable[[], None]
    """A renegotiation failed: the session cannot go on."""


class Negotiation:
    """Offers and answers on behalf of one client (``label`` names it in logs); ``send`` reaches its socket."""

    def __init__(
        self, label: str, *, single_pc: bool, send: Callable[[pr.SignalResponse], None], events: PeerEvents
    ) -> None:
        self.label = label
        self.single_pc = single_pc
        self._send = send
        self._events = events
        self._tasks = Tasks(label, logger)
        self.publisher: MediaPeer | None = None
        self.subscriber: MediaPeer | None = None
        self.closed = False
        self._joining = False
        self._pending: asyncio.Handle | None = None
        self._awaiting_answer = False
        self._offer_again = False

    @property
    def primary(self) -> MediaPeer | None:
        """The connection that carries data and subscribed media: the single one, or the legacy subscriber."""
        return self.publisher if self.single_pc else self.subscriber

    async def join(self, offer: pr.SessionDescription | None) -> None:
        """The join's own negotiation: answer its offer (legacy: offer the subscriber connection), then renegotiate
        for what it could not carry (more m-lines to ask for, or a track that arrived while it was being made)."""
        self._joining = True
        try:
            if offer is not None:
                await self.answer(offer)
            if not self.single_pc:
                await self.offer_subscriber()
        finally:
            self._joining = False
        peer = self.primary
        if peer is not None and peer.unsent():
            self.negotiate()

    async def answer(self, offer: pr.SessionDescription) -> None:
        sdp, mids = await self._publisher_peer().answer(offer.sdp)
        answer = pr.SessionDescription(type="answer", sdp=sdp, id=offer.id, mid_to_track_id=mids)
        self._send(pr.SignalResponse(answer=answer))

    async def offer_subscriber(self) -> None:
        self._awaiting_answer = True
        sdp = await self._subscriber_peer().offer()
        self._send(pr.SignalResponse(offer=pr.SessionDescription(type="offer", sdp=sdp)))

    async def accept_answer(self, answer: pr.SessionDescription) -> None:
        """The client's answer to our last offer (legacy); a change made meanwhile is offered now."""
        if self.subscriber is None:
            return
        await self.subscriber.accept_answer(answer.sdp)
        self._awaiting_answer = False
        if self._offer_again:
            self._offer_again = False
            self.negotiate()

    async def trickle(self, trickle: pr.TrickleRequest) -> None:
        target = self.subscriber if trickle.target == pr.SUBSCRIBER else self.publisher
        if target is not None:
            await target.add_candidate(trickle.candidateInit)

    def resumed(self) -> None:
        """As LiveKit, offer the subscriber connection again after a resume: an answer lost with the old socket
        would otherwise leave its new tracks unsent for good."""
        if self.subscriber is not None:
            self._awaiting_answer = self._offer_again = False
            self.negotiate()

    def add_outlet(self, outlet: Outlet, stream_id: str) -> None:
        """Send ``outlet`` to the client from the next negotiation on (legacy: refused at once if aiortc lacks its
        codec); `negotiate` starts that negotiation."""
        if self.single_pc:
            self._publisher_peer().queue_outlet(outlet, stream_id)
        else:
            self._subscriber_peer().send_outlet(outlet, stream_id)

    def remove_outlet(self, outlet: Outlet) -> None:
        if self.primary is not None:
            self.primary.remove_outlet(outlet)
        self.negotiate()

    def send_data(self, label: str, data: bytes) -> None:
        if self.primary is not None and not self.closed:
            self.primary.send_data(label, data)

    def negotiate(self) -> None:
        """Renegotiate once the current burst of changes is over (a join in progress does it itself)."""
        if self._joining or self.closed or self._pending is not None:
            return
        self._pending = asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._pending = None
        if self.closed:
            return
        if self.single_pc:
            # the client offers on the single connection: tell it how many more recvonly m-lines to add, which
            # also makes it offer now (our answer binds the waiting outlets)
            audios, videos = self._publisher_peer().missing_sections()
            need = pr.MediaSectionsRequirement(num_audios=audios, num_videos=videos)
            self._send(pr.SignalResponse(media_sections_requirement=need))
        elif self._awaiting_answer:
            self._offer_again = True
        else:
            self._tasks.spawn(self._offer_or_fail(), "offer")

    async def _offer_or_fail(self) -> None:
        try:
            await self.offer_subscriber()
        except Exception as exc:
            logger.error("%s: %s in a negotiation: %s; closing the session", self.label, type(exc).__name__, exc)
            if not self.closed:
                self._events.failed()

    def _publisher_peer(self) -> MediaPeer:
        if self.publisher is None:
            events = self._events
            self.publisher = MediaPeer(
                f"{self.label}/publisher",
                on_connected=events.connected if self.single_pc else None,
                on_data=events.data,
                on_inbound=events.inbound,
                on_inbound_ended=events.inbound_ended,
                on_refused=events.refused,
            )
        return self.publisher

    def _subscriber_peer(self) -> MediaPeer:
        if self.subscriber is None:
            events = self._events
            self.subscriber = MediaPeer(
                f"{self.label}/subscriber", on_connected=events.connected, on_refused=events.refused
            )
        return self.subscriber

    def stop(self) -> None:
        """No more negotiations (the session is closing)."""
        self.closed = True
        if self._pending is not None:
            self._pending.cancel()

    async def close(self) -> None:
        """Cancel the offers in progress, then close the peer connections (also those made after `stop`)."""
        self.stop()
        await self._tasks.close()
        await self.close_peers()

    async def close_peers(self) -> None:
        for peer in (self.publisher, self.subscriber):
            if peer is not None:
                await peer.close()
