"""Participant and TrackInfo snapshots, built from real SDK objects (no FFI involved) and from fakes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from livekit import rtc
from livekit.rtc._proto import handle_pb2, participant_pb2, track_pb2
from pydantic import ValidationError

from rtcstack._models import (
    Participant,
    SdkTrackPublication,
    TrackInfo,
    _construct,
    participant_from_sdk,
    track_info_from_sdk,
)

JOINED_MS = 1_700_000_000_000


def _handle() -> handle_pb2.FfiOwnedHandle:
    return handle_pb2.FfiOwnedHandle(id=0)  # 0 is the SDK's invalid handle: nothing is ever freed over FFI


def _sdk_publication(sid: str, kind: int, source: int, *, muted: bool = False) -> rtc.RemoteTrackPublication:
    info = track_pb2.TrackPublicationInfo(sid=sid, name=f"{sid}-name", kind=kind, source=source, muted=muted)  # type: ignore[arg-type]  # ints stand for the protobuf enum ValueType
    return rtc.RemoteTrackPublication(track_pb2.OwnedTrackPublication(handle=_handle(), info=info))


def _sdk_participant(joined_at_ms: int = JOINED_MS) -> rtc.RemoteParticipant:
    info = participant_pb2.ParticipantInfo(
        sid="PA_1",
        identity="alice",
        name="Alice",
        metadata='{"role": "host"}',
        attributes={"lang": "fr"},
        kind=participant_pb2.PARTICIPANT_KIND_AGENT,
        state=participant_pb2.PARTICIPANT_STATE_ACTIVE,
        joined_at=joined_at_ms,
    )
    p = rtc.RemoteParticipant(participant_pb2.OwnedParticipant(handle=_handle(), info=info))
    for pub in (
        _sdk_publication("TR_mic", track_pb2.KIND_AUDIO, track_pb2.SOURCE_MICROPHONE, muted=True),
        _sdk_publication("TR_cam", track_pb2.KIND_VIDEO, track_pb2.SOURCE_CAMERA),
    ):
        p._track_publications[pub.sid] = pub
    return p


@dataclass
class FakePublication:
    sid: str = "TR_1"
    name: str = "screen"
    kind: int = 2
    source: int = 3
    muted: bool = False


@dataclass
class FakeParticipant:
    identity: str = "bob"
    sid: str = "PA_2"
    name: str = ""
    kind: int = 0
    state: int = 1
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    track_publications: Mapping[str, SdkTrackPublication] = field(default_factory=dict)
    joined_at: datetime | None = None


def test_participant_from_real_sdk_object() -> None:
    snap = participant_from_sdk(_sdk_participant(), is_local=False, quality="good", is_speaking=True)
    expected = Participant(
        identity="alice",
        sid="PA_1",
        name="Alice",
        kind="agent",
        state="active",
        connection_quality="good",
        metadata='{"role": "host"}',
        attributes={"lang": "fr"},
        is_local=False,
        is_speaking=True,
        tracks=[
            TrackInfo(
                sid="TR_mic", name="TR_mic-name", kind="audio", source="microphone", muted=True, subscribed=False
            ),
            TrackInfo(sid="TR_cam", name="TR_cam-name", kind="video", source="camera", muted=False, subscribed=False),
        ],
        joined_at=datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc),
    )
    assert snap == expected
    assert snap.model_dump() == expected.model_dump()
    assert snap.model_fields_set == expected.model_fields_set


def test_not_joined_yet_is_none() -> None:
    snap = participant_from_sdk(_sdk_participant(joined_at_ms=0), is_local=False, quality="unknown", is_speaking=False)
    assert snap.joined_at is None


def test_subscribed_follows_the_remote_publication() -> None:
    pub = _sdk_publication("TR_x", track_pb2.KIND_AUDIO, track_pb2.SOURCE_MICROPHONE)
    pub._subscribed = True
    assert track_info_from_sdk(pub).subscribed is True


async def test_local_publication_reads_as_subscribed() -> None:
    """Async only because the SDK's LocalTrackPublication makes a Future on the running loop."""
    info = track_pb2.TrackPublicationInfo(
        sid="TR_l", name="mic", kind=track_pb2.KIND_AUDIO, source=track_pb2.SOURCE_MICROPHONE
    )
    local = rtc.LocalTrackPublication(track_pb2.OwnedTrackPublication(handle=_handle(), info=info))
    assert track_info_from_sdk(local) == TrackInfo(
        sid="TR_l", name="mic", kind="audio", source="microphone", muted=False, subscribed=True
    )


def test_fake_participant_and_local_flag() -> None:
    fake = FakeParticipant(track_publications={"TR_1": FakePublication()})
    snap = participant_from_sdk(fake, is_local=True, quality="excellent", is_speaking=False)
    assert snap.is_local is True
    assert snap.connection_quality == "excellent"
    assert (snap.kind, snap.state) == ("standard", "joined")
    assert snap.tracks == [
        TrackInfo(sid="TR_1", name="screen", kind="video", source="screen_share", muted=False, subscribed=True)
    ]


def test_unmapped_sdk_values_fall_back() -> None:
    fake = FakeParticipant(kind=42, state=42, track_publications={"t": FakePublication(kind=42, source=42)})
    snap = participant_from_sdk(fake, is_local=False, quality="unknown", is_speaking=False)
    assert (snap.kind, snap.state) == ("standard", "joined")
    assert (snap.tracks[0].kind, snap.tracks[0].source) == ("unknown", "unknown")


@pytest.mark.parametrize(
    "joined_at",
    [
        datetime(2024, 5, 1, 12, 0),
        datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc),
    ],
    ids=["naive-is-utc", "other-offset", "utc"],
)
def test_joined_at_is_aware_utc(joined_at: datetime) -> None:
    snap = participant_from_sdk(
        FakeParticipant(joined_at=joined_at), is_local=False, quality="unknown", is_speaking=False
    )
    assert snap.joined_at == datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert snap.joined_at is not None and snap.joined_at.tzinfo is timezone.utc


def test_snapshot_does_not_share_the_attributes_dict() -> None:
    fake = FakeParticipant(attributes={"a": "1"})
    snap = participant_from_sdk(fake, is_local=False, quality="unknown", is_speaking=False)
    fake.attributes["a"] = "2"
    assert snap.attributes == {"a": "1"}


def test_construct_matches_model_construct() -> None:
    values = {
        "sid": "T",
        "name": "n",
        "kind": "audio",
        "source": "camera",
        "muted": True,
        "subscribed": False,
        "media": "flowing",
    }
    fast = _construct(TrackInfo, dict(values))
    slow = TrackInfo.model_construct(**values)  # type: ignore[arg-type]  # a dict of mixed values, as the pump has
    assert fast == slow == TrackInfo.model_validate(values)
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ is slow.__pydantic_extra__
    assert fast.__pydantic_private__ is slow.__pydantic_private__
    assert repr(fast) == repr(slow)
    assert hash(fast) == hash(slow)


def test_models_are_frozen_and_validated() -> None:
    info = TrackInfo(sid="T", name="n", kind="audio", source="camera", muted=False, subscribed=True)
    with pytest.raises(ValidationError):
        info.muted = True
    with pytest.raises(ValidationError):
        TrackInfo(sid="T", name="n", kind="hologram", source="camera", muted=False, subscribed=True)  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(ValidationError):
        TrackInfo.model_validate({"sid": "T", "name": "n", "kind": "audio", "source": "camera", "muted": False})
