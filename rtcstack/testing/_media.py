"""The server side of one WebRTC transport, on aiortc: answer offers, make offers, take trickled candidates.

Media is not forwarded; the peer connection exists so the SDK's ICE/DTLS/SCTP come up as with a real server.
aiortc does not implement ICE restart, so `MediaPeer.answer` adopts the offer's new remote ufrag/pwd in aioice
itself (see PROTOCOL.md): the restarted checks then authenticate and the newly nominated pair takes over.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

__all__ = ["MediaPeer"]

logger = logging.getLogger("rtcstack.testing")

_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)
_PWD = re.compile(r"^a=ice-pwd:(\S+)", re.MULTILINE)


class MediaPeer:
    """One RTCPeerConnection with no ICE servers (host candidates only, nothing leaves the machine)."""

    def __init__(
        self,
        label: str,
        *,
        on_connected: Callable[[], None] | None = None,
        on_data: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.label = label
        self._pc: Any = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._channels: list[Any] = []
        self._data_outbox: list[tuple[str, bytes]] = []
        self._on_connected = on_connected
        self._on_data = on_data
        self._pc.on("connectionstatechange", self._state_changed)
        self._pc.on("datachannel", self._add_channel)

    def _state_changed(self) -> None:
        logger.debug("%s: %s", self.label, self._pc.connectionState)
        if self._pc.connectionState == "connected" and self._on_connected is not None:
            self._on_connected()

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    async def answer(self, offer_sdp: str) -> str:
        """Apply a remote offer (first, renegotiation or ICE restart) and return our answer SDP."""
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        self._adopt_remote_ice(offer_sdp)
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        return str(self._pc.localDescription.sdp)

    async def offer(self) -> str:
        """Make an offer (the subscriber transport of the legacy two-connection mode) and return its SDP.

        The first offer carries the ``_reliable``, ``_lossy`` and ``_data_track`` data channels, as the real server's
        does, so the transport has an m-line to connect.
        """
        if not self._channels:
            self._add_channel(self._pc.createDataChannel("_reliable", ordered=True))
            self._add_channel(self._pc.createDataChannel("_lossy", ordered=False, maxRetransmits=0))
            self._add_channel(self._pc.createDataChannel("_data_track", ordered=False, maxRetransmits=0))
        await self._pc.setLocalDescription(await self._pc.createOffer())
        return str(self._pc.localDescription.sdp)

    async def accept_answer(self, answer_sdp: str) -> None:
        """Apply the client's answer to our offer."""
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        self._adopt_remote_ice(answer_sdp)

    async def add_candidate(self, candidate_init: str) -> None:
        """Add one trickled candidate (``TrickleRequest.candidateInit``, JSON); bad or late ones are logged."""
        try:
            init = json.loads(candidate_init)
            line = str(init.get("candidate", ""))
            if not line:
                return
            candidate = candidate_from_sdp(line.removeprefix("candidate:"))
            candidate.sdpMid = init.get("sdpMid")
            candidate.sdpMLineIndex = init.get("sdpMLineIndex")
            await self._pc.addIceCandidate(candidate)
        except (ValueError, AssertionError, AttributeError, TypeError) as exc:
            logger.debug("%s: ignored trickled candidate: %s", self.label, exc)

    def send_data(self, label: str, data: bytes) -> None:
        """Send ``data`` on the data channel ``label`` (ours, or one the client opened in-band) once it is open."""
        self._data_outbox.append((label, data))
        self._flush_data()

    def _add_channel(self, channel: Any) -> None:
        self._channels.append(channel)
        channel.on("open", self._flush_data)
        channel.on("message", lambda message: self._received(channel.label, message))
        self._flush_data()

    def _received(self, label: str, message: bytes | str) -> None:
        if self._on_data is not None and isinstance(message, bytes):
            self._on_data(label, message)

    def _flush_data(self) -> None:
        waiting: list[tuple[str, bytes]] = []
        for label, data in self._data_outbox:
            channel = next((c for c in self._channels if c.label == label and c.readyState == "open"), None)
            if channel is None:
                waiting.append((label, data))
            else:
                channel.send(data)
        self._data_outbox = waiting

    async def close(self) -> None:
        await self._pc.close()

    def _adopt_remote_ice(self, sdp: str) -> None:
        ufrag, pwd = _UFRAG.search(sdp), _PWD.search(sdp)
        if ufrag is None or pwd is None:
            return
        for connection in self._ice_connections():
            if connection.remote_username not in (None, ufrag.group(1)):
                logger.debug("%s: ICE restart, adopting the new remote credentials", self.label)
                connection.remote_username = ufrag.group(1)
                connection.remote_password = pwd.group(1)

    def _ice_connections(self) -> list[Any]:
        transports = [t.receiver.transport for t in self._pc.getTransceivers()]
        if self._pc.sctp is not None:
            transports.append(self._pc.sctp.transport)
        seen: dict[int, Any] = {}
        for dtls in transports:
            connection = dtls.transport._connection
            seen.setdefault(id(connection), connection)
        return list(seen.values())
