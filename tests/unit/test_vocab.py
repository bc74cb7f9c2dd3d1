"""The vocabularies match their Literal types, and every livekit enum value is mapped."""

from __future__ import annotations

import logging
from typing import Any, get_args

import pytest
from livekit import rtc

import rtcstack
from rtcstack import _vocab as v


def _sdk_values(enum: Any) -> list[int]:
    """Every value of a livekit enum, whether a Python IntEnum or a protobuf enum wrapper."""
    if hasattr(enum, "values") and not isinstance(enum, type):
        return [int(x) for x in enum.values()]
    return [int(member) for member in enum]


@pytest.mark.parametrize(
    ("literal", "values"),
    [
        (v.ConnectionStateName, v.CONNECTION_STATES),
        (v.QualityName, v.QUALITIES),
        (v.ParticipantKindName, v.PARTICIPANT_KINDS),
        (v.ParticipantStateName, v.PARTICIPANT_STATES),
        (v.DisconnectReason, v.DISCONNECT_REASONS),
        (v.TrackKindName, v.TRACK_KINDS),
        (v.TrackSourceName, v.TRACK_SOURCES),
        (v.EventName, v.EVENT_NAMES),
    ],
)
def test_tuple_matches_literal(literal: Any, values: tuple[str, ...]) -> None:
    assert values == get_args(literal)
    assert len(set(values)) == len(values)


def test_vocabulary_sizes_follow_design() -> None:
    assert len(v.DISCONNECT_REASONS) == 17
    assert len(v.EVENT_NAMES) == 24


@pytest.mark.parametrize(
    ("enum", "table", "vocabulary"),
    [
        (rtc.ConnectionQuality, v.QUALITY_FROM_SDK, v.QUALITIES),
        (rtc.ParticipantKind, v.KIND_FROM_SDK, v.PARTICIPANT_KINDS),
        (rtc.ParticipantState, v.PARTICIPANT_STATE_FROM_SDK, v.PARTICIPANT_STATES),
        (rtc.TrackKind, v.TRACK_KIND_FROM_SDK, v.TRACK_KINDS),
        (rtc.TrackSource, v.TRACK_SOURCE_FROM_SDK, v.TRACK_SOURCES),
    ],
    ids=["quality", "kind", "participant_state", "track_kind", "track_source"],
)
def test_every_sdk_value_is_mapped_onto_the_whole_vocabulary(
    enum: Any, table: dict[int, str], vocabulary: tuple[str, ...]
) -> None:
    sdk_values = _sdk_values(enum)
    assert sorted(table) == sorted(sdk_values), "a livekit enum value is unmapped (new SDK release?)"
    assert set(table.values()) == set(vocabulary)


def test_every_sdk_disconnect_reason_is_mapped() -> None:
    assert sorted(v.REASON_FROM_SDK) == sorted(_sdk_values(rtc.DisconnectReason))


def test_reason_table_content() -> None:
    r = rtc.DisconnectReason
    expected = {
        r.UNKNOWN_REASON: ("unknown", True),
        r.CLIENT_INITIATED: ("client_initiated", False),
        r.DUPLICATE_IDENTITY: ("duplicate_identity", False),
        r.SERVER_SHUTDOWN: ("server_shutdown", True),
        r.PARTICIPANT_REMOVED: ("participant_removed", False),
        r.ROOM_DELETED: ("room_deleted", False),
        r.STATE_MISMATCH: ("network_error", True),
        r.JOIN_FAILURE: ("join_failure", True),
        r.MIGRATION: ("network_error", True),
        r.SIGNAL_CLOSE: ("network_error", True),
        r.ROOM_CLOSED: ("room_closed", False),
        r.USER_UNAVAILABLE: ("user_unavailable", False),
        r.USER_REJECTED: ("user_rejected", False),
        r.SIP_TRUNK_FAILURE: ("sip_trunk_failure", False),
        r.CONNECTION_TIMEOUT: ("network_error", True),
        r.MEDIA_FAILURE: ("network_error", True),
        r.AGENT_ERROR: ("agent_error", False),
    }
    assert expected == v.REASON_FROM_SDK


def test_reasons_the_sdk_cannot_report_are_ours() -> None:
    """The reasons no livekit value maps onto are exactly those rtcstack decides itself."""
    from_sdk = {reason for reason, _ in v.REASON_FROM_SDK.values()}
    assert set(v.DISCONNECT_REASONS) - from_sdk == {
        "token_expired",
        "auth_rejected",
        "connect_timeout",
        "cancelled",
    }


def test_quality_table_by_name() -> None:
    q = rtc.ConnectionQuality
    assert v.QUALITY_FROM_SDK[q.QUALITY_EXCELLENT] == "excellent"
    assert v.QUALITY_FROM_SDK[q.QUALITY_POOR] == "poor"
    assert v.QUALITY_FROM_SDK[q.QUALITY_LOST] == "lost"
    assert v.QUALITY_FROM_SDK[q.QUALITY_UNKNOWN] == "unknown"


def test_lookups_on_known_values() -> None:
    assert v.quality_from_sdk(rtc.ConnectionQuality.QUALITY_GOOD) == "good"
    assert v.kind_from_sdk(rtc.ParticipantKind.PARTICIPANT_KIND_AGENT) == "agent"
    assert v.participant_state_from_sdk(rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE) == "active"
    assert v.track_kind_from_sdk(rtc.TrackKind.KIND_VIDEO) == "video"
    assert v.track_source_from_sdk(rtc.TrackSource.SOURCE_SCREENSHARE) == "screen_share"
    assert v.reason_from_sdk(rtc.DisconnectReason.SIGNAL_CLOSE) == ("network_error", True)
    assert v.reason_from_sdk(rtc.DisconnectReason.ROOM_DELETED) == ("room_deleted", False)


def test_lookups_fall_back_on_unmapped_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rtcstack")
    assert v.quality_from_sdk(99) == "unknown"
    assert v.kind_from_sdk(99) == "standard"
    assert v.participant_state_from_sdk(99) == "joined"
    assert v.track_kind_from_sdk(99) == "unknown"
    assert v.track_source_from_sdk(99) == "unknown"
    assert v.reason_from_sdk(99) == ("unknown", True)
    unmapped = [r for r in caplog.records if "unmapped livekit" in r.getMessage()]
    assert len(unmapped) == 6
    assert all(r.levelno == logging.DEBUG for r in unmapped)


def test_event_args_follow_design() -> None:
    assert v.EVENT_ARGS["state_changed"] == ("state", "previous")
    assert v.EVENT_ARGS["data_received"] == ("data", "participant", "topic", "reliable")
    assert v.EVENT_ARGS["connection_quality_changed"] == ("participant", "quality")
    assert v.EVENT_ARGS["track_subscription_failed"] == ("participant", "track_sid", "error")
    assert v.EVENT_ARGS["track_stalled"] == ("participant", "track", "reason")
    assert v.EVENT_ARGS["track_resumed"] == ("participant", "track", "stalled_for")
    assert v.EVENT_ARGS["media_restored"] == ("after",)
    health = ("track_subscription_failed", "track_stalled", "track_resumed")
    tracks = [name for name in v.EVENT_NAMES if name.startswith("track_") and name not in health]
    assert all(v.EVENT_ARGS[name] == ("participant", "track") for name in tracks)


def test_event_names_follow_the_design_table_in_order() -> None:
    assert rtcstack.EVENT_NAMES is v.EVENT_NAMES
    assert v.EVENT_NAMES == (
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
    )
