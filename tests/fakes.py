"""Test doubles shared by the unit tests of the pump: SDK-shaped participants and tokens, no network."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from livekit import api, rtc

KEY, SECRET = "devkey", "a-secret-long-enough-for-hs256-signing"


def mint(identity: str = "me", room: str = "demo", ttl: float = 600) -> str:
    """A real LiveKit token (HS256 with KEY/SECRET) for `identity` in `room`, expiring in `ttl` seconds."""
    return (
        api.AccessToken(KEY, SECRET)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .with_ttl(timedelta(seconds=ttl))
        .to_jwt()
    )


@dataclass
class FakeParticipant:
    """What the pump reads from a `livekit.rtc.Participant`."""

    identity: str
    sid: str = ""
    name: str = ""
    kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    state: int = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    track_publications: dict[str, Any] = field(default_factory=dict)
    joined_at: datetime | None = None
    connection_quality: int = rtc.ConnectionQuality.QUALITY_UNKNOWN
    disconnect_reason: int | None = None

    async def publish_track(self, track: Any, options: rtc.TrackPublishOptions) -> Any:
        """Refuses: the call wraps it on its Room's local participant (test_call_media's FakeLocal publishes)."""
        raise rtc.participant.PublishTrackError("a fake participant publishes nothing")
