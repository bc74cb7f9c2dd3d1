"""The remote roster: participant snapshots in join order, and reconciliation across a reconnect. No I/O.

While the call is reconnecting the SDK may report churn that is not real (a full restart re-announces everyone,
a rejoin starts from an empty Room). The roster is *held* then: joins and leaves are not applied, and when the call
is back, `release()` compares the roster from before the episode with the Room's actual participants and returns
only the real changes (those who are not back yet may be kept a while: `release(keep=...)`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from ._machine import Emit, Left
from ._models import Participant

__all__ = ["Roster"]


def _differs(old: Participant, new: Participant) -> bool:
    return (
        old.sid != new.sid
        or old.name != new.name
        or old.metadata != new.metadata
        or old.attributes != new.attributes
        or old.kind != new.kind
        or old.state != new.state
    )


def _in_join_order(participants: Iterable[Participant]) -> list[Participant]:
    """By ``joined_at`` (unknown last), ties in the given order: the SDK's own order of a Room's participants is
    not their join order."""
    return sorted(participants, key=lambda p: (p.joined_at is None, p.joined_at.timestamp() if p.joined_at else 0.0))


class Roster:
    """Remote participants by identity, in join order."""

    __slots__ = ("_by_identity", "_held")

    def __init__(self) -> None:
        self._by_identity: dict[str, Participant] = {}
        self._held = False

    @property
    def held(self) -> bool:
        """True while a reconnect episode is in progress."""
        return self._held

    def snapshot(self) -> list[Participant]:
        """The participants in join order (a new list; the snapshots themselves are immutable)."""
        return list(self._by_identity.values())

    def get(self, identity: str) -> Participant | None:
        """The snapshot of `identity`, or None."""
        return self._by_identity.get(identity)

    def seed(self, participants: Iterable[Participant]) -> None:
        """Start from the participants already in the room at connect (no events: they did not just join)."""
        self._by_identity = {p.identity: p for p in _in_join_order(participants)}
        self._held = False

    def join(self, participant: Participant) -> list[Emit]:
        """A participant joined (or was announced again)."""
        if self._held:
            return []
        known = participant.identity in self._by_identity
        self._by_identity[participant.identity] = participant
        return [Emit("participant_updated" if known else "participant_joined", (participant,))]

    def leave(self, identity: str) -> list[Left]:
        """A participant left."""
        if self._held:
            return []
        gone = self._by_identity.pop(identity, None)
        return [] if gone is None else [Left(gone)]

    def replace(self, participant: Participant) -> bool:
        """Store a fresh snapshot of a known participant; False (nothing stored) for an unknown one."""
        if participant.identity not in self._by_identity:
            return False
        self._by_identity[participant.identity] = participant
        return True

    def update(self, participant: Participant) -> list[Emit]:
        """A known participant's name, metadata, attributes or state changed."""
        if self._held or not self.replace(participant):
            return []
        return [Emit("participant_updated", (participant,))]

    def hold(self) -> None:
        """Stop applying joins and leaves until `release()`."""
        self._held = True

    def release(self, current: Iterable[Participant], keep: Collection[str] = ()) -> list[Emit | Left]:
        """Adopt `current` (the Room's participants now) and return the real joins, leaves and updates.

        Participants of `keep` who are not in `current` stay, silently: they may not be back yet (after a server's
        death everyone joins the room again at their own pace); the caller decides later whether they left.
        """
        self._held = False
        before = self._by_identity
        now = {p.identity: p for p in _in_join_order(current)}
        out: list[Emit | Left] = [Left(p) for i, p in before.items() if i not in now and i not in keep]
        merged: dict[str, Participant] = {}
        for identity, old in before.items():
            new = now.get(identity)
            if new is not None:
                merged[identity] = new
                if _differs(old, new):
                    out.append(Emit("participant_updated", (new,)))
            elif identity in keep:
                merged[identity] = old
        for identity, new in now.items():
            if identity not in merged:
                merged[identity] = new
                out.append(Emit("participant_joined", (new,)))
        self._by_identity = merged
        return out

    def clear(self) -> None:
        """Forget everyone (the call ended)."""
        self._by_identity = {}
        self._held = False
