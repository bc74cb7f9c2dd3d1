"""Snapshots of participants and their tracks (frozen pydantic v2 models) and the converters from SDK objects.

The converters run on the pump's hot path: they read an SDK object through a small ``Protocol`` and build the
snapshot without validation (the SDK already typed its values) through ``_construct``, which does what
``model_construct`` does for a complete set of fields at a quarter of its cost (a test holds them equal).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from ._vocab import (
    MediaHealthName,
    ParticipantKindName,
    ParticipantStateName,
    QualityName,
    TrackKindName,
    TrackSourceName,
    kind_from_sdk,
    participant_state_from_sdk,
    track_kind_from_sdk,
    track_source_from_sdk,
)

__all__ = [
    "Participant",
    "SdkParticipant",
    "SdkTrackPublication",
    "TrackInfo",
    "participant_from_sdk",
    "track_info_from_sdk",
]

_UTC = timezone.utc
_M = TypeVar("_M", bound=BaseModel)
_set_attr = object.__setattr__


class TrackInfo(BaseModel):
    """A published track as seen at one moment. ``subscribed`` is always True for the local participant's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sid: str
    name: str
    kind: TrackKindName
    source: TrackSourceName
    muted: bool
    subscribed: bool
    media: MediaHealthName = "unknown"
    """The media health: ``"flowing"``, ``"stalled"``, or ``"unknown"`` (not watched, or no sample yet)."""


class Participant(BaseModel):
    """A participant as seen at one moment (a snapshot: later changes arrive as new objects in events).

    ``joined_at`` is an aware UTC datetime, or None before the server reported it. ``tracks`` are in the SDK's
    publication order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: str
    sid: str
    name: str
    kind: ParticipantKindName
    state: ParticipantStateName
    connection_quality: QualityName
    metadata: str
    attributes: dict[str, str]
    is_local: bool
    is_speaking: bool
    tracks: list[TrackInfo]
    joined_at: datetime | None


class SdkTrackPublication(Protocol):
    """What the converters read from a ``livekit.rtc.TrackPublication`` (``subscribed`` only if remote)."""

    @property
    def sid(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> int: ...
    @property
    def source(self) -> int: ...
    @property
    def muted(self) -> bool: ...


class SdkParticipant(Protocol):
    """What the converters read from a ``livekit.rtc.Participant`` (local or remote)."""

    @property
    def identity(self) -> str: ...
    @property
    def sid(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> int: ...
    @property
    def state(self) -> int: ...
    @property
    def metadata(self) -> str: ...
    @property
    def attributes(self) -> Mapping[str, str]: ...
    @property
    def track_publications(self) -> Mapping[str, SdkTrackPublication]: ...
    @property
    def joined_at(self) -> datetime | None: ...


def _construct(cls: type[_M], values: dict[str, Any]) -> _M:
    """``cls.model_construct(**values)`` for a plain model given every field (no defaults, extras or privates)."""
    model = cls.__new__(cls)
    _set_attr(model, "__dict__", values)
    _set_attr(model, "__pydantic_fields_set__", set(values))
    _set_attr(model, "__pydantic_extra__", None)
    _set_attr(model, "__pydantic_private__", None)
    return model


def _unwatched(sid: str) -> MediaHealthName:
    return "unknown"


def track_info_from_sdk(
    publication: SdkTrackPublication, media: Callable[[str], MediaHealthName] = _unwatched
) -> TrackInfo:
    """Snapshot a track publication; a publication without ``subscribed`` (a local one) reads as subscribed.
    ``media`` tells a track's health by its sid."""
    return _construct(
        TrackInfo,
        {
            "sid": publication.sid,
            "name": publication.name,
            "kind": track_kind_from_sdk(publication.kind),
            "source": track_source_from_sdk(publication.source),
            "muted": publication.muted,
            "subscribed": getattr(publication, "subscribed", True),
            "media": media(publication.sid),
        },
    )


def participant_from_sdk(
    p: SdkParticipant,
    *,
    is_local: bool,
    quality: QualityName,
    is_speaking: bool,
    media: Callable[[str], MediaHealthName] = _unwatched,
) -> Participant:
    """Snapshot an SDK participant; ``quality``, ``is_speaking`` and each track's ``media`` come from the call's
    own bookkeeping."""
    joined_at = p.joined_at
    if joined_at is not None and joined_at.tzinfo is not _UTC:
        joined_at = joined_at.replace(tzinfo=_UTC) if joined_at.tzinfo is None else joined_at.astimezone(_UTC)
    publications = p.track_publications
    return _construct(
        Participant,
        {
            "identity": p.identity,
            "sid": p.sid,
            "name": p.name,
            "kind": kind_from_sdk(p.kind),
            "state": participant_state_from_sdk(p.state),
            "connection_quality": quality,
            "metadata": p.metadata,
            "attributes": dict(p.attributes),
            "is_local": is_local,
            "is_speaking": is_speaking,
            "tracks": [track_info_from_sdk(pub, media) for pub in publications.values()] if publications else [],
            "joined_at": joined_at,
        },
    )
