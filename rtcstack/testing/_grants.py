"""Development tokens for the test servers: one minting path for LoopbackServer, LiveKitServer and LiveKitCluster."""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from livekit import api

from ._tables import PARTICIPANT_KINDS

__all__ = ["Minter", "mint_token"]


def mint_token(
    api_key: str,
    api_secret: str,
    identity: str,
    room: str,
    *,
    name: str | None = None,
    ttl: float = 600,
    kind: str | None = None,
    metadata: str | None = None,
    attributes: Mapping[str, str] | None = None,
    grants: api.VideoGrants | None = None,
) -> str:
    """A join token for ``identity`` in ``room`` (by default it may publish, subscribe and update its own metadata)."""
    if kind is not None and kind not in PARTICIPANT_KINDS:
        raise ValueError(f"unknown participant kind {kind!r}")
    grants = grants or api.VideoGrants(room_join=True, room=room, can_update_own_metadata=True)
    token = api.AccessToken(api_key, api_secret).with_identity(identity).with_grants(grants)
    token.with_ttl(datetime.timedelta(seconds=ttl))
    token.claims.name = name or ""
    token.claims.kind = kind or ""
    token.claims.metadata = metadata or ""
    token.claims.attributes = dict(attributes) if attributes else None
    return token.to_jwt()


class Minter:
    """What every test server offers: `token`, signed with its ``api_key`` and ``api_secret``."""

    api_key: str
    api_secret: str

    def token(
        self,
        identity: str,
        room: str = "default",
        name: str | None = None,
        ttl: float = 600,
        kind: str | None = None,
        metadata: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Mint a join token for ``identity`` in ``room`` (it may update its own metadata, as in tests you want)."""
        return mint_token(
            self.api_key,
            self.api_secret,
            identity,
            room,
            name=name,
            ttl=ttl,
            kind=kind,
            metadata=metadata,
            attributes=attributes,
        )
