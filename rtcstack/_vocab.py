"""rtcstack's string vocabularies and the tables that map livekit enums onto them.

Each vocabulary is a ``Literal`` type with a tuple of its values in the same order. The ``*_FROM_SDK`` tables
are plain data keyed by the integer value of a livekit enum; the ``*_from_sdk`` functions look a value up and
fall back to ``"unknown"`` (logged at debug) for a value a newer SDK added and the table lacks.
``EVENT_ARGS`` names the positional arguments of each event, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal, TypeVar

from livekit import rtc

__all__ = [
    "AUDIO_SOURCES",
    "CONNECTION_STATES",
    "DISCONNECT_REASONS",
    "EVENT_ARGS",
    "EVENT_NAMES",
    "KIND_FROM_SDK",
    "PARTICIPANT_KINDS",
    "PARTICIPANT_STATES",
    "PARTICIPANT_STATE_FROM_SDK",
    "QUALITIES",
    "QUALITY_FROM_SDK",
    "REASON_FROM_SDK",
    "TRACK_KINDS",
    "TRACK_KIND_FROM_SDK",
    "TRACK_SOURCES",
    "TRACK_SOURCE_FROM_SDK",
    "TRACK_SOURCE_TO_SDK",
    "VIDEO_SOURCES",
    "ConnectionStateName",
    "DisconnectReason",
    "EventName",
    "MediaHealthName",
    "ParticipantKindName",
    "ParticipantStateName",
    "QualityName",
    "StallReason",
    "TrackKindName",
    "TrackSourceName",
    "kind_from_sdk",
    "participant_state_from_sdk",
    "quality_from_sdk",
    "reason_from_sdk",
    "track_kind_from_sdk",
    "track_source_from_sdk",
]

logger = logging.getLogger("rtcstack")

ConnectionStateName = Literal["idle", "connecting", "connected", "reconnecting", "disconnected"]
QualityName = Literal["excellent", "good", "poor", "lost", "unknown"]
ParticipantKindName = Literal["standard", "agent", "sip", "egress", "ingress", "connector", "bridge"]
ParticipantStateName = Literal["joining", "joined", "active", "disconnected"]
DisconnectReason = Literal[
    "client_initiated",
    "network_error",
    "token_expired",
    "auth_rejected",
    "connect_timeout",
    "cancelled",
    "duplicate_identity",
    "participant_removed",
    "room_deleted",
    "room_closed",
    "server_shutdown",
    "join_failure",
    "user_unavailable",
    "user_rejected",
    "sip_trunk_failure",
    "agent_error",
    "unknown",
]
TrackKindName = Literal["audio", "video", "unknown"]
TrackSourceName = Literal["camera", "microphone", "screen_share", "screen_share_audio", "unknown"]
EventName = Literal[
    "state_changed",
    "connected",
    "reconnecting",
    "reconnected",
    "disconnected",
    "token_expired",
    "token_refreshed",
    "token_refresh_failed",
    "participant_joined",
    "participant_left",
    "participant_updated",
    "connection_quality_changed",
    "track_published",
    "track_unpublished",
    "track_muted",
    "track_unmuted",
    "track_subscribed",
    "track_unsubscribed",
    "track_subscription_failed",
    "active_speakers_changed",
    "data_received",
    "track_stalled",
    "track_resumed",
    "media_restored",
]

CONNECTION_STATES: tuple[ConnectionStateName, ...] = (
    "idle",
    "connecting",
    "connected",
    "reconnecting",
    "disconnected",
)
QUALITIES: tuple[QualityName, ...] = ("excellent", "good", "poor", "lost", "unknown")
PARTICIPANT_KINDS: tuple[ParticipantKindName, ...] = (
    "standard",
    "agent",
    "sip",
    "egress",
    "ingress",
    "connector",
    "bridge",
)
PARTICIPANT_STATES: tuple[ParticipantStateName, ...] = ("joining", "joined", "active", "disconnected")
DISCONNECT_REASONS: tuple[DisconnectReason, ...] = (
    "client_initiated",
    "network_error",
    "token_expired",
    "auth_rejected",
    "connect_timeout",
    "cancelled",
    "duplicate_identity",
    "participant_removed",
    "room_deleted",
    "room_closed",
    "server_shutdown",
    "join_failure",
    "user_unavailable",
    "user_rejected",
    "sip_trunk_failure",
    "agent_error",
    "unknown",
)
TRACK_KINDS: tuple[TrackKindName, ...] = ("audio", "video", "unknown")
TRACK_SOURCES: tuple[TrackSourceName, ...] = (
    "camera",
    "microphone",
    "screen_share",
    "screen_share_audio",
    "unknown",
)

#: Positional argument names of each event, in the order of DESIGN §3's table; ``CallEvent`` reads its properties
#: from this, and ``EVENT_NAMES`` (exported as ``rtcstack.EVENT_NAMES``) is its keys in order.
EVENT_ARGS: dict[EventName, tuple[str, ...]] = {
    "state_changed": ("state", "previous"),
    "connected": (),
    "reconnecting": ("attempt",),
    "reconnected": (),
    "disconnected": ("reason",),
    "token_expired": ("expires_at",),
    "token_refreshed": ("expires_at",),
    "token_refresh_failed": ("error",),
    "participant_joined": ("participant",),
    "participant_left": ("participant",),
    "participant_updated": ("participant",),
    "connection_quality_changed": ("participant", "quality"),
    "track_published": ("participant", "track"),
    "track_unpublished": ("participant", "track"),
    "track_muted": ("participant", "track"),
    "track_unmuted": ("participant", "track"),
    "track_subscribed": ("participant", "track"),
    "track_unsubscribed": ("participant", "track"),
    "track_subscription_failed": ("participant", "track_sid", "error"),
    "active_speakers_changed": ("participants",),
    "data_received": ("data", "participant", "topic", "reliable"),
    "track_stalled": ("participant", "track", "reason"),
    "track_resumed": ("participant", "track", "stalled_for"),
    "media_restored": ("after",),
}
EVENT_NAMES: tuple[EventName, ...] = tuple(EVENT_ARGS)

_Quality = rtc.ConnectionQuality
QUALITY_FROM_SDK: dict[int, QualityName] = {
    _Quality.QUALITY_EXCELLENT: "excellent",
    _Quality.QUALITY_GOOD: "good",
    _Quality.QUALITY_POOR: "poor",
    _Quality.QUALITY_LOST: "lost",
    _Quality.QUALITY_UNKNOWN: "unknown",
}

_Kind = rtc.ParticipantKind
KIND_FROM_SDK: dict[int, ParticipantKindName] = {
    _Kind.PARTICIPANT_KIND_STANDARD: "standard",
    _Kind.PARTICIPANT_KIND_AGENT: "agent",
    _Kind.PARTICIPANT_KIND_SIP: "sip",
    _Kind.PARTICIPANT_KIND_EGRESS: "egress",
    _Kind.PARTICIPANT_KIND_INGRESS: "ingress",
    _Kind.PARTICIPANT_KIND_CONNECTOR: "connector",
    _Kind.PARTICIPANT_KIND_BRIDGE: "bridge",
}

_State = rtc.ParticipantState
PARTICIPANT_STATE_FROM_SDK: dict[int, ParticipantStateName] = {
    _State.PARTICIPANT_STATE_JOINING: "joining",
    _State.PARTICIPANT_STATE_JOINED: "joined",
    _State.PARTICIPANT_STATE_ACTIVE: "active",
    _State.PARTICIPANT_STATE_DISCONNECTED: "disconnected",
}

_TrackKind = rtc.TrackKind
TRACK_KIND_FROM_SDK: dict[int, TrackKindName] = {
    _TrackKind.KIND_AUDIO: "audio",
    _TrackKind.KIND_VIDEO: "video",
    _TrackKind.KIND_UNKNOWN: "unknown",
}

_Source = rtc.TrackSource
TRACK_SOURCE_FROM_SDK: dict[int, TrackSourceName] = {
    _Source.SOURCE_CAMERA: "camera",
    _Source.SOURCE_MICROPHONE: "microphone",
    _Source.SOURCE_SCREENSHARE: "screen_share",
    _Source.SOURCE_SCREENSHARE_AUDIO: "screen_share_audio",
    _Source.SOURCE_UNKNOWN: "unknown",
}
TRACK_SOURCE_TO_SDK: dict[TrackSourceName, int] = {name: value for value, name in TRACK_SOURCE_FROM_SDK.items()}
#: The sources an audio track (``audio_stream``) and a video track (``video_stream``) may have.
AUDIO_SOURCES: tuple[TrackSourceName, ...] = ("microphone", "screen_share_audio", "unknown")
VIDEO_SOURCES: tuple[TrackSourceName, ...] = ("camera", "screen_share", "unknown")

_Reason = rtc.DisconnectReason
#: livekit disconnect reason -> (our reason, transient?). Transient reasons make the call rejoin on its own.
REASON_FROM_SDK: dict[int, tuple[DisconnectReason, bool]] = {
    _Reason.UNKNOWN_REASON: ("unknown", True),
    _Reason.CLIENT_INITIATED: ("client_initiated", False),
    _Reason.DUPLICATE_IDENTITY: ("duplicate_identity", False),
    _Reason.SERVER_SHUTDOWN: ("server_shutdown", True),
    _Reason.PARTICIPANT_REMOVED: ("participant_removed", False),
    _Reason.ROOM_DELETED: ("room_deleted", False),
    _Reason.STATE_MISMATCH: ("network_error", True),
    _Reason.JOIN_FAILURE: ("join_failure", True),
    _Reason.MIGRATION: ("network_error", True),
    _Reason.SIGNAL_CLOSE: ("network_error", True),
    _Reason.ROOM_CLOSED: ("room_closed", False),
    _Reason.USER_UNAVAILABLE: ("user_unavailable", False),
    _Reason.USER_REJECTED: ("user_rejected", False),
    _Reason.SIP_TRUNK_FAILURE: ("sip_trunk_failure", False),
    _Reason.CONNECTION_TIMEOUT: ("network_error", True),
    _Reason.MEDIA_FAILURE: ("network_error", True),
    _Reason.AGENT_ERROR: ("agent_error", False),
}
_V = TypeVar("_V")
_UNKNOWN_REASON: tuple[DisconnectReason, bool] = REASON_FROM_SDK[_Reason.UNKNOWN_REASON]


def _lookup(table: Mapping[int, _V], value: int, fallback: _V, enum: str) -> _V:
    found = table.get(value)
    if found is None:
        logger.debug("unmapped livekit %s value %r, using %r", enum, value, fallback)
        return fallback
    return found


def quality_from_sdk(value: int) -> QualityName:
    """Our quality name for a ``livekit.rtc.ConnectionQuality`` value (unmapped: ``"unknown"``)."""
    return _lookup(QUALITY_FROM_SDK, value, "unknown", "ConnectionQuality")


def kind_from_sdk(value: int) -> ParticipantKindName:
    """Our participant kind for a ``livekit.rtc.ParticipantKind`` value (unmapped: ``"standard"``)."""
    return _lookup(KIND_FROM_SDK, value, "standard", "ParticipantKind")


def participant_state_from_sdk(value: int) -> ParticipantStateName:
    """Our participant state for a ``livekit.rtc.ParticipantState`` value (unmapped: ``"joined"``)."""
    return _lookup(PARTICIPANT_STATE_FROM_SDK, value, "joined", "ParticipantState")


def track_kind_from_sdk(value: int) -> TrackKindName:
    """Our track kind for a ``livekit.rtc.TrackKind`` value (unmapped: ``"unknown"``)."""
    return _lookup(TRACK_KIND_FROM_SDK, value, "unknown", "TrackKind")


def track_source_from_sdk(value: int) -> TrackSourceName:
    """Our track source for a ``livekit.rtc.TrackSource`` value (unmapped: ``"unknown"``)."""
    return _lookup(TRACK_SOURCE_FROM_SDK, value, "unknown", "TrackSource")


def reason_from_sdk(value: int) -> tuple[DisconnectReason, bool]:
    """``(our reason, transient?)`` for a ``livekit.rtc.DisconnectReason`` (unmapped: unknown, transient)."""
    return _lookup(REASON_FROM_SDK, value, _UNKNOWN_REASON, "DisconnectReason")


MediaHealthName = Literal["unknown", "flowing", "stalled"]
"""``TrackInfo.media``: not watched or not yet known, media flows, or the track stalled."""
StallReason = Literal["no_packets", "no_frames"]
"""Why a track stalled: no packets arrive (or, for a local track, are sent), or video packets without frames."""
