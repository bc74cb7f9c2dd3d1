"""Development tokens for the test servers: one minting path for LoopbackServer, LiveKitServer and LiveKitCluster."""

from __future__ import annotations

import datetime
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import TypeVar

from livekit import api
from livekit.protocol import models as pm

from ._tables import PARTICIPANT_KINDS

__all__ = ["BaseServer", "Minter", "mint_token"]

_S = TypeVar("_S", bound="BaseServer")


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

    def _reissue(self, info: pm.ParticipantInfo, room: str, ttl: float) -> str:
        """A fresh token for a participant in ``room``, with its present name, metadata, attributes, kind and
        permissions (what a server pushes as ``refresh_token``)."""
        grants = api.VideoGrants(
            room_join=True,
            room=room,
            can_publish=info.permission.can_publish,
            can_subscribe=info.permission.can_subscribe,
            can_publish_data=info.permission.can_publish_data,
            can_update_own_metadata=info.permission.can_update_metadata,
        )
        kind = next((name for name, value in PARTICIPANT_KINDS.items() if value == info.kind), "standard")
        return mint_token(
            self.api_key,
            self.api_secret,
            info.identity,
            room,
            name=info.name,
            ttl=ttl,
            kind=kind,
            metadata=info.metadata,
            attributes=dict(info.attributes) or None,
            grants=grants,
        )


class BaseServer(Minter, ABC):
    """The shape of the three test servers: `token`, ``async with`` (`start` then `close`), and a repr that says
    where it listens (``url`` once `_listening`) and its state (`_state`), never a secret."""

    @property
    @abstractmethod
    def url(self) -> str:
        """``ws://host:port``, what ``Room.connect`` takes (only once started)."""

    @property
    @abstractmethod
    def _listening(self) -> bool:
        """Whether `start` has run (and `close` has not)."""

    @abstractmethod
    def _state(self) -> str:
        """What the repr shows after the address."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url if self._listening else 'not started'} {self._state()}>"

    async def __aenter__(self: _S) -> _S:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
