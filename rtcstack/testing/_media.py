"""The server side of one WebRTC transport, on aiortc: answer offers, make offers, take trickled candidates, media.

Media the client sends is taken encoded out of each receiver (`ReceiverTap`) into the `Source` the session binds
to that m-line; media for the client goes out through `Outlet` tracks on sendonly transceivers: added to our own
offers (the legacy subscriber connection) or bound, at the client's next offer, to the recvonly m-lines it offers
(single peer connection). A simulcast offer is answered accepting all its layers, with the RID header extension
the SDK requires; each subscriber is sent the layer it asks for. aiortc does not implement ICE restart, so
`MediaPeer.answer` adopts the offer's new remote ufrag/pwd in aioice itself (see PROTOCOL.md): the restarted
checks then authenticate and the newly nominated pair takes over.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtp import RtcpSrPacket
from aiortc.sdp import SessionDescription, candidate_from_sdp

from ._forward import Outlet, ReceiverTap, Source

__all__ = [
    "CodecRefused",
    "MalformedDescription",
    "MediaPeer",
    "OfferedSection",
    "accept_layers",
    "description_problem",
    "offered_sections",
    "unsupported",
]

logger = logging.getLogger("rtcstack.testing")

_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
_FORWARDED = {"audio/opus", "audio/pcmu", "audio/pcma", "video/vp8", "video/h264"}
"""Codecs aiortc can receive and send (its own list, less G.722 which nobody offers)."""
_ANSWER_SETTLE = 0.2
"""Seconds an outlet bound in our answer waits for the client to apply it (see `Outlet.hold`)."""
_HELPERS = {"rtx", "red", "ulpfec", "flexfec-03", "telephone-event", "cn"}


class CodecRefused(ValueError):
    """An offer asks us to receive a track in codecs aiortc lacks (VP9, AV1, H.265...)."""


class MalformedDescription(ValueError):
    """An offer or answer that is no usable WebRTC description (`description_problem` says why)."""


def description_problem(sdp: str, kind: str) -> str | None:
    """What makes ``sdp`` unusable as a remote ``kind`` ("offer" or "answer"), or None if aiortc can apply it.

    aiortc checks little of a remote description: what it cannot read fails in its parser (an assert, a missing
    key), and a section without ICE credentials, DTLS setup and fingerprint, mid or a codec it knows fails later,
    some of it as an AttributeError. Each of those is caught here, before aiortc applies anything.
    """
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser asserts, indexes and looks keys up in what it reads
        return f"unreadable SDP ({type(exc).__name__})"
    roles = ("auto", "client", "server") if kind == "offer" else ("client", "server")
    for index, media in enumerate(description.media):
        where = f"m-line {index} ({media.kind})"
        if media.kind not in ("audio", "video", "application"):
            return f"{where} is of no kind WebRTC carries"
        if not media.rtp.muxId:
            return f"{where} has no mid"
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            return f"{where} has no ICE username fragment and password"
        if media.dtls is None or media.dtls.role not in roles or not media.dtls.fingerprints:
            return f"{where} has no DTLS setup and fingerprint"
        if media.kind in ("audio", "video"):
            capabilities = RTCRtpReceiver.getCapabilities(media.kind)
            known = {c.mimeType.lower() for c in capabilities.codecs} if capabilities is not None else set()
            sends = media.direction in (None, "sendrecv", "sendonly")  # a track in codecs aiortc lacks: CodecRefused
            if not any(c.mimeType.lower() in known for c in media.rtp.codecs) and not (sends and media.rtp.codecs):
                return f"{where} offers no codec the server knows"
    return None


@dataclass(frozen=True)
class OfferedSection:
    """What one audio / video m-section of a remote offer says, read from its SDP text."""

    mid: str
    kind: str
    direction: str
    track_id: str
    codecs: tuple[str, ...]
    """``kind/name`` of each payload, e.g. ``video/VP8``, in offer order."""
    rids: tuple[str, ...] = ()
    """The simulcast layers it sends (``a=simulcast:send``), in offer order."""
    rid_extension: int | None = None

    @property
    def sends(self) -> bool:
        return self.direction in ("sendonly", "sendrecv")


def _sections(sdp: str) -> list[list[str]]:
    """The lines of the session part, then of each m-section (for what aiortc's parser leaves out: rid, simulcast)."""
    parts: list[list[str]] = [[]]
    for line in sdp.replace("\r\n", "\n").strip().split("\n"):
        if line.startswith("m="):
            parts.append([])
        parts[-1].append(line)
    return parts


def _simulcast_rids(lines: list[str]) -> tuple[str, ...]:
    """The layers an m-section sends (``a=simulcast:send f;h;q``, paused ones ``~f`` too), in order."""
    simulcast = next((line.split()[1] for line in lines if line.startswith("a=simulcast:send ")), "")
    return tuple(rid.split(",")[0].lstrip("~") for rid in simulcast.split(";") if rid)


def offered_sections(sdp: str) -> list[OfferedSection]:
    """The audio and video m-sections of an SDP, in order (read by aiortc's parser, the layers by a scan)."""
    description = SessionDescription.parse(sdp)
    found = []
    for media, lines in zip(description.media, _sections(sdp)[1:], strict=True):
        if media.kind not in ("audio", "video"):
            continue
        msid = (media.msid or "").split()
        found.append(
            OfferedSection(
                mid=media.rtp.muxId,
                kind=media.kind,
                direction=media.direction or "sendrecv",
                track_id=msid[1] if len(msid) > 1 else "",
                codecs=tuple(codec.mimeType for codec in media.rtp.codecs),
                rids=_simulcast_rids(lines),
                rid_extension=next((e.id for e in media.rtp.headerExtensions if e.uri == _RID_URI), None),
            )
        )
    return found


def unsupported(section: OfferedSection) -> bool:
    """Whether a section the client sends on offers no codec we can forward."""
    media = [c for c in section.codecs if c.split("/", 1)[1].lower() not in _HELPERS]
    return bool(media) and not any(c.lower() in _FORWARDED for c in media)


def accept_layers(offer: str, answer: str) -> str:
    """Accept the RID header extension wherever it is offered, and every layer of each simulcast section.

    libwebrtc then sends each layer on its SSRC, its first packets marked with their rid. The extension is accepted
    on every video section, not only simulcast ones: libwebrtc keeps to the extensions negotiated in the bundle, so
    a later simulcast publish on an answer without it fails in the SDK.
    """
    offered = {s.mid: s for s in offered_sections(offer) if s.rid_extension is not None}
    if not offered:
        return answer
    parts = _sections(answer)
    for lines in parts[1:]:
        mid = next((line[6:] for line in lines if line.startswith("a=mid:")), "")
        section = offered.get(mid)
        if section is None or not lines[0].startswith("m=video") or lines[0].startswith("m=video 0 "):
            continue
        extmap = f"a=extmap:{section.rid_extension} {_RID_URI}"
        if extmap not in lines:
            lines.append(extmap)
        if section.rids and section.sends:
            lines.extend(f"a=rid:{rid} recv" for rid in section.rids)
            lines.append(f"a=simulcast:recv {';'.join(section.rids)}")
    return "\r\n".join("\r\n".join(lines) for lines in parts) + "\r\n"


def _no_report_before_media(sender: Any) -> Callable[[list[Any]], Awaitable[None]]:
    """``sender``'s RTCP, less its sender reports until its first packet.

    aiortc sends sender reports from the start, with an NTP time of 0 until it has sent a packet; media that then
    starts late (a stalled track, resumed) made the SDK's ``get_rtc_stats()`` panic in its first moments (libwebrtc
    wrote an invalid number into its stats JSON), aborting the process.
    """
    send = sender._send_rtcp

    async def send_rtcp(packets: list[Any]) -> None:
        if sender._RTCRtpSender__ntp_timestamp == 0:
            packets = [packet for packet in packets if not isinstance(packet, RtcpSrPacket)]
        if packets:
            await send(packets)

    return send_rtcp


class MediaPeer:
    """One RTCPeerConnection with no ICE servers (host candidates only, nothing leaves the machine).

    ``on_inbound`` is called with the section and its negotiated codec when an offer starts sending a track on an
    m-line (or a new track on a reused one) and returns the `Source` its frames go to (None: ignored);
    ``on_inbound_ended`` is called with the mid when an offer stops sending on it; ``on_refused`` with an outlet
    the client cannot receive (its codec is in none of the client's m-lines for it, or aiortc lacks it).
    """

    def __init__(
        self,
        label: str,
        *,
        on_connected: Callable[[], None] | None = None,
        on_data: Callable[[str, bytes], None] | None = None,
        on_inbound: Callable[[OfferedSection, str], Source | None] | None = None,
        on_inbound_ended: Callable[[str], None] | None = None,
        on_refused: Callable[[Outlet], None] | None = None,
    ) -> None:
        self.label = label
        # max-bundle, as LiveKit's clients and server: with aiortc's default (balanced) the second and later m-lines
        # of a kind that one offer brings are left on a transport the BUNDLE then discards, and what is sent on them
        # never starts (a subscriber got one of a publisher's two video tracks).
        config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        self._pc: Any = RTCPeerConnection(config)
        self._channels: list[Any] = []
        self._data_outbox: list[tuple[str, bytes]] = []
        self._on_connected = on_connected
        self._on_data = on_data
        self._on_inbound = on_inbound
        self._on_inbound_ended = on_inbound_ended
        self._on_refused = on_refused
        self._inbound: dict[str, str] = {}
        """mid -> msid track id of the tracks the client sends us."""
        self._taps: dict[str, ReceiverTap] = {}
        self._waiting: list[tuple[Outlet, str]] = []
        """Outlets (with their stream id) for the client's next offer to carry (single peer connection)."""
        self._pc.on("connectionstatechange", self._state_changed)
        self._pc.on("datachannel", self._add_channel)

    def _state_changed(self) -> None:
        logger.debug("%s: %s", self.label, self._pc.connectionState)
        if self._pc.connectionState == "connected" and self._on_connected is not None:
            self._on_connected()

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    async def answer(self, offer_sdp: str) -> tuple[str, dict[str, str]]:
        """Apply a remote offer (first, renegotiation or ICE restart); return our answer SDP and mid -> track sid.

        A malformed offer raises `MalformedDescription`, and a track offered only in codecs aiortc lacks raises
        `CodecRefused`, before anything is applied.
        """
        problem = description_problem(offer_sdp, "offer")
        if problem is not None:
            raise MalformedDescription(problem)
        sections = offered_sections(offer_sdp)
        refused = [s for s in sections if s.sends and s.mid not in self._inbound and unsupported(s)]
        if refused:
            names = ", ".join(sorted({c for s in refused for c in s.codecs if c.split("/")[1].lower() not in _HELPERS}))
            raise CodecRefused(f"no codec the loopback server can forward in {names} (it forwards VP8, H264, Opus)")
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        self._adopt_remote_ice(offer_sdp)
        self._take_inbound(sections)
        self._bind_waiting()
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        answer = accept_layers(offer_sdp, str(self._pc.localDescription.sdp))
        return answer, self.outbound()

    def _transceiver(self, mid: str) -> Any:
        return next((t for t in self._pc.getTransceivers() if t.mid == mid), None)

    def _take_inbound(self, sections: list[OfferedSection]) -> None:
        for section in sections:
            transceiver = self._transceiver(section.mid)
            if transceiver is None:
                continue
            if not section.sends:
                if self._inbound.pop(section.mid, None) is not None and self._on_inbound_ended is not None:
                    self._on_inbound_ended(section.mid)
                continue
            if self._inbound.get(section.mid) == section.track_id or self._on_inbound is None:
                continue
            if section.mid in self._inbound and self._on_inbound_ended is not None:
                self._on_inbound_ended(section.mid)
            self._inbound[section.mid] = section.track_id
            codecs = transceiver._codecs
            source = self._on_inbound(section, str(codecs[0].mimeType) if codecs else "")
            if source is None:
                continue
            tap = self._taps.get(section.mid)
            if tap is None:
                tap = self._taps[section.mid] = ReceiverTap(transceiver.receiver, section.kind)
            tap.bind(source)
            if section.rid_extension is not None and section.rids:  # so aiortc reads each packet's layer
                extension = RTCRtpHeaderExtensionParameters(id=section.rid_extension, uri=_RID_URI)
                if extension not in transceiver._headerExtensions:
                    transceiver._headerExtensions.append(extension)

    # -- media to the client ---------------------------------------------------------------------------------

    def send_outlet(self, outlet: Outlet, stream_id: str) -> None:
        """Add a sendonly transceiver for ``outlet`` to our next offer, in the source's codec (refused if aiortc
        lacks it)."""
        mime = outlet.source.mime_type.lower()
        capabilities = RTCRtpSender.getCapabilities(outlet.kind).codecs
        preferred = [c for c in capabilities if c.mimeType.lower() == mime]
        if not preferred:
            self._refuse(outlet)
            return
        transceiver = self._pc.addTransceiver(outlet, direction="sendonly")
        transceiver.setCodecPreferences(preferred + [c for c in capabilities if c.mimeType.lower().endswith("/rtx")])
        self._prepare_sender(transceiver, outlet, stream_id)

    def _refuse(self, outlet: Outlet) -> None:
        logger.debug("%s: cannot send %r in %s", self.label, outlet.source, outlet.source.mime_type)
        if self._on_refused is not None:
            self._on_refused(outlet)

    def queue_outlet(self, outlet: Outlet, stream_id: str) -> None:
        """Send ``outlet`` on a recvonly m-line of the client's next offer (single peer connection)."""
        self._waiting.append((outlet, stream_id))

    def missing_sections(self) -> tuple[int, int]:
        """(audio, video) recvonly m-lines the client must add for the outlets waiting to be sent."""
        free = {"audio": 0, "video": 0}
        for transceiver in self._free_transceivers():
            free[transceiver.kind] += 1
        wanted = {"audio": 0, "video": 0}
        for outlet, _ in self._waiting:
            wanted[outlet.kind] += 1
        return max(0, wanted["audio"] - free["audio"]), max(0, wanted["video"] - free["video"])

    def unsent(self) -> bool:
        """Whether an outlet waits for a negotiation to carry it (one attached while an offer or answer was made)."""
        return bool(self._waiting) or any(
            t.mid is None and isinstance(t.sender.track, Outlet) for t in self._pc.getTransceivers()
        )

    def remove_outlet(self, outlet: Outlet) -> None:
        """Stop sending ``outlet``: its m-line goes inactive at the next negotiation and is not used again."""
        self._waiting = [(o, s) for o, s in self._waiting if o is not outlet]
        for transceiver in self._pc.getTransceivers():
            if transceiver.sender.track is outlet:
                transceiver.sender.replaceTrack(None)
                transceiver.direction = "inactive"
                transceiver._rtcstack_used = True

    def outbound(self) -> dict[str, str]:
        """mid -> track sid of what we send the client."""
        return {
            t.mid: t.sender.track.id
            for t in self._pc.getTransceivers()
            if t.mid is not None and isinstance(t.sender.track, Outlet)
        }

    def _free_transceivers(self) -> list[Any]:
        return [
            t
            for t in self._pc.getTransceivers()
            if t._offerDirection == "sendonly" and t.sender.track is None and not getattr(t, "_rtcstack_used", False)
        ]

    def _bind_waiting(self) -> None:
        free = self._free_transceivers()
        waiting: list[tuple[Outlet, str]] = []
        for outlet, stream_id in self._waiting:
            mime = outlet.source.mime_type.lower()
            offered = [t for t in free if t.kind == outlet.kind]
            transceiver = next((t for t in offered if any(c.mimeType.lower() == mime for c in t._codecs)), None)
            if transceiver is None:
                if offered:  # m-lines for it, none in its codec: the client cannot receive it
                    self._refuse(outlet)
                else:
                    waiting.append((outlet, stream_id))
                continue
            free.remove(transceiver)
            transceiver.direction = "sendonly"
            transceiver._codecs.sort(key=lambda c: c.mimeType.lower() != mime)
            self._prepare_sender(transceiver, outlet, stream_id)
            outlet.hold(_ANSWER_SETTLE)
        self._waiting = waiting

    @staticmethod
    def _prepare_sender(transceiver: Any, outlet: Outlet, stream_id: str) -> None:
        sender = transceiver.sender
        sender.replaceTrack(outlet)
        sender._stream_id = stream_id
        sender._send_keyframe = outlet.request_keyframe
        sender._send_rtcp = _no_report_before_media(sender)
        transceiver._rtcstack_used = True

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
        """Apply the client's answer to our offer (a malformed one raises `MalformedDescription`, unapplied)."""
        problem = description_problem(answer_sdp, "answer")
        if problem is not None:
            raise MalformedDescription(problem)
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
        connecting = self._connect_tasks()
        await self._pc.close()
        # aiortc starts its connect as a task it keeps no reference to; closed mid-connect, that task fails
        # ("RTCIceTransport is closed") and nobody would read its exception
        await asyncio.gather(*connecting, return_exceptions=True)

    def _connect_tasks(self) -> list[asyncio.Task[Any]]:
        """aiortc's running ``RTCPeerConnection.__connect`` tasks of this peer connection."""
        found = []
        for task in asyncio.all_tasks():
            coro = task.get_coro()
            frame = getattr(coro, "cr_frame", None)
            named = getattr(coro, "__qualname__", "") == "RTCPeerConnection.__connect"
            if named and frame is not None and frame.f_locals.get("self") is self._pc:
                found.append(task)
        return found

    def _adopt_remote_ice(self, sdp: str) -> None:
        ice = next((m.ice for m in SessionDescription.parse(sdp).media if m.ice is not None), None)
        if ice is None or not ice.usernameFragment or not ice.password:
            return
        for connection in self._ice_connections():
            if connection.remote_username not in (None, ice.usernameFragment):
                logger.debug("%s: ICE restart, adopting the new remote credentials", self.label)
                connection.remote_username = ice.usernameFragment
                connection.remote_password = ice.password

    def _ice_connections(self) -> list[Any]:
        transports = [t.receiver.transport for t in self._pc.getTransceivers()]
        if self._pc.sctp is not None:
            transports.append(self._pc.sctp.transport)
        seen: dict[int, Any] = {}
        for dtls in transports:
            connection = dtls.transport._connection
            seen.setdefault(id(connection), connection)
        return list(seen.values())
