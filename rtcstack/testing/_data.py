"""The loopback server's data plane: what LiveKit does to a DataPacket a participant publishes, and who gets it.

LiveKit (pkg/rtc) trusts the data channel a packet came in on for its ``kind``, stamps the sender (its sid always,
its identity unless the sender is hidden, or an agent speaking for someone else in a chat message or text stream),
drops a reliable packet whose ``sequence`` it has already seen from that sender (the SDK resends after a resume),
forwards transcriptions from agents only, and hands metrics to the participants allowed to subscribe to them.
Every other kind (user, RPC request/ack/response, stream header/chunk/trailer, chat, SIP DTMF, encrypted, and any
kind it does not know) is forwarded to the room, or to the destination identities/sids if the packet names any.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from livekit.protocol import models as pm

__all__ = ["CHANNEL_KINDS", "NonceFilter", "ReliableSequence", "addressed_to", "forwarded", "stamp"]

CHANNEL_KINDS: Final[dict[str, pm.DataPacket.Kind]] = {
    "_reliable": pm.DataPacket.RELIABLE,
    "_lossy": pm.DataPacket.LOSSY,
}
"""The kind of a packet by the data channel it arrived on (the channels LiveKit's clients open)."""

_NONCES_KEPT: Final = 100
"""How many recent user-packet nonces a room remembers (LiveKit's deduper keeps 100)."""


def stamp(packet: pm.DataPacket, kind: pm.DataPacket.Kind, sender: pm.ParticipantInfo) -> None:
    """Rewrite ``packet``, published by ``sender`` on a channel of ``kind``, as LiveKit does before forwarding it."""
    packet.kind = kind
    packet.participant_sid = sender.sid
    identity = "" if sender.permission.hidden else sender.identity
    on_behalf = sender.kind == pm.ParticipantInfo.AGENT and packet.participant_identity not in ("", sender.identity)
    which = packet.WhichOneof("value")
    if which == "user":
        packet.user.participant_sid = "" if sender.permission.hidden else sender.sid
        packet.user.participant_identity = identity
        _share_destinations(packet)
    elif which == "chat_message" and on_behalf:
        packet.chat_message.generated = True
        return
    elif which == "stream_header" and on_behalf and packet.stream_header.WhichOneof("content_header") == "text_header":
        packet.stream_header.text_header.generated = True
        return
    packet.participant_identity = identity


def forwarded(packet: pm.DataPacket, sender: pm.ParticipantInfo) -> bool:
    """Whether LiveKit passes this packet on to the room: transcriptions only from agents, metrics never as such."""
    which: str | None = packet.WhichOneof("value")
    if which == "transcription":
        return sender.kind == pm.ParticipantInfo.AGENT
    return which != "metrics"


def addressed_to(packet: pm.DataPacket, sid: str, identity: str) -> bool:
    """Whether a participant with ``sid`` / ``identity`` gets ``packet`` (no destination named: everyone does)."""
    sids, identities = packet.user.destination_sids, packet.destination_identities or packet.user.destination_identities
    if not sids and not identities:
        return True
    return sid in sids or identity in identities


def _share_destinations(packet: pm.DataPacket) -> None:
    """The packet-level destination identities win; the deprecated ones in the user packet fill in if it has none."""
    if packet.destination_identities:
        del packet.user.destination_identities[:]
        packet.user.destination_identities.extend(packet.destination_identities)
    else:
        packet.destination_identities.extend(packet.user.destination_identities)


class ReliableSequence:
    """The last reliable ``sequence`` seen from one sender: a packet at or below it is a resend and is dropped."""

    def __init__(self) -> None:
        self.last = 0

    def fresh(self, packet: pm.DataPacket, kind: pm.DataPacket.Kind) -> bool:
        if kind != pm.DataPacket.RELIABLE or packet.sequence == 0:
            return True
        if packet.sequence <= self.last:
            return False
        self.last = packet.sequence
        return True


class NonceFilter:
    """A room's recent user-packet nonces: a user packet whose 16-byte nonce was seen lately is a duplicate."""

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def duplicate(self, packet: pm.DataPacket) -> bool:
        nonce = packet.user.nonce if packet.WhichOneof("value") == "user" else b""
        if len(nonce) != 16:
            return False
        if nonce in self._seen:
            return True
        self._seen[nonce] = None
        if len(self._seen) > _NONCES_KEPT:
            self._seen.popitem(last=False)
        return False
