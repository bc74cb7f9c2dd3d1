"""Tables from our vocabulary strings onto livekit-protocol values (data, not code paths)."""

from __future__ import annotations

from typing import Final

from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from .._vocab import TrackSourceName

__all__ = [
    "CONNECTION_QUALITIES",
    "DISCONNECT_REASONS",
    "LEAVE_ACTIONS",
    "PARTICIPANT_KINDS",
    "QUALITY_SCORES",
    "TRACK_SOURCE_NAMES",
]

DISCONNECT_REASONS: Final[dict[str, pm.DisconnectReason]] = {
    "client_initiated": pm.CLIENT_INITIATED,
    "network_error": pm.SIGNAL_CLOSE,
    "token_expired": pm.JOIN_FAILURE,
    "auth_rejected": pm.JOIN_FAILURE,
    "connect_timeout": pm.CONNECTION_TIMEOUT,
    "cancelled": pm.CLIENT_INITIATED,
    "duplicate_identity": pm.DUPLICATE_IDENTITY,
    "participant_removed": pm.PARTICIPANT_REMOVED,
    "room_deleted": pm.ROOM_DELETED,
    "room_closed": pm.ROOM_CLOSED,
    "server_shutdown": pm.SERVER_SHUTDOWN,
    "join_failure": pm.JOIN_FAILURE,
    "user_unavailable": pm.USER_UNAVAILABLE,
    "user_rejected": pm.USER_REJECTED,
    "sip_trunk_failure": pm.SIP_TRUNK_FAILURE,
    "agent_error": pm.AGENT_ERROR,
    "unknown": pm.UNKNOWN_REASON,
}
"""Our disconnect reasons -> the protocol's. Several of ours have no protocol twin and share the closest one."""

LEAVE_ACTIONS: Final[dict[str, pr.LeaveRequest.Action]] = {
    "disconnect": pr.LeaveRequest.DISCONNECT,
    "resume": pr.LeaveRequest.RESUME,
    "reconnect": pr.LeaveRequest.RECONNECT,
}
"""What the client is asked to do after a server-initiated leave."""

CONNECTION_QUALITIES: Final[dict[str, pm.ConnectionQuality]] = {
    "excellent": pm.EXCELLENT,
    "good": pm.GOOD,
    "poor": pm.POOR,
    "lost": pm.LOST,
}
"""Our qualities -> the protocol's. ``unknown`` is only the state before the first update: it has no wire value."""

QUALITY_SCORES: Final[dict[str, float]] = {"excellent": 4.5, "good": 3.8, "poor": 2.5, "lost": 0.0}
"""A MOS-like score sent with each quality, in the band the real server uses for it."""

PARTICIPANT_KINDS: Final[dict[str, pm.ParticipantInfo.Kind]] = {
    "standard": pm.ParticipantInfo.STANDARD,
    "agent": pm.ParticipantInfo.AGENT,
    "sip": pm.ParticipantInfo.SIP,
    "egress": pm.ParticipantInfo.EGRESS,
    "ingress": pm.ParticipantInfo.INGRESS,
    "connector": pm.ParticipantInfo.CONNECTOR,
    "bridge": pm.ParticipantInfo.BRIDGE,
}
"""Participant kinds (the JWT ``kind`` claim and ``add_participant(kind=)``) -> ParticipantInfo.Kind."""

TRACK_SOURCE_NAMES: Final[dict[int, TrackSourceName]] = {
    pm.TrackSource.UNKNOWN: "unknown",
    pm.TrackSource.CAMERA: "camera",
    pm.TrackSource.MICROPHONE: "microphone",
    pm.TrackSource.SCREEN_SHARE: "screen_share",
    pm.TrackSource.SCREEN_SHARE_AUDIO: "screen_share_audio",
}
"""TrackInfo.source -> our track source names (`ReceivedTrack.source`, `add_participant` media)."""
