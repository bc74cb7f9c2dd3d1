"""rtcstack: a thin, typed `Call` facade over the LiveKit Python SDK.

    call = create_call(url, token, token_refresher=fetch_new_token)
    call.on("reconnecting", lambda attempt: print(f"reconnecting (attempt {attempt})"))
    await call.connect()

Its media survives its own rejoin (`call.publish_track`, `call.audio_stream`, `call.video_stream`); everything else
(RPC, data streams, track settings) stays reachable through `call.room`.
"""

import logging

from ._call import Call, create_call
from ._emitter import CallEvent
from ._errors import (
    AuthRejectedError,
    ConfigError,
    ConnectError,
    ConnectTimeoutError,
    InvalidStateError,
    PublishError,
    RtcstackError,
    TokenError,
    TokenExpiredError,
    TokenRefreshError,
)
from ._models import Participant, TrackInfo
from ._options import CallOptions, ReconnectPolicy
from ._streams import MediaStream
from ._tokens import Refresher, http_token_refresher
from ._vocab import (
    EVENT_NAMES,
    ConnectionStateName,
    DisconnectReason,
    EventName,
    MediaHealthName,
    ParticipantKindName,
    ParticipantStateName,
    QualityName,
    StallReason,
    TrackKindName,
    TrackSourceName,
)

__version__ = "0.1.0.dev0"

__all__ = [  # noqa: RUF022  (plainly sorted, as tests/unit/test_public_api.py checks; ruff puts constants first)
    "AuthRejectedError",
    "Call",
    "CallEvent",
    "CallOptions",
    "ConfigError",
    "ConnectError",
    "ConnectTimeoutError",
    "ConnectionStateName",
    "DisconnectReason",
    "EVENT_NAMES",
    "EventName",
    "InvalidStateError",
    "MediaHealthName",
    "MediaStream",
    "Participant",
    "ParticipantKindName",
    "ParticipantStateName",
    "PublishError",
    "QualityName",
    "ReconnectPolicy",
    "Refresher",
    "RtcstackError",
    "StallReason",
    "TokenError",
    "TokenExpiredError",
    "TokenRefreshError",
    "TrackInfo",
    "TrackKindName",
    "TrackSourceName",
    "create_call",
    "http_token_refresher",
]

logging.getLogger("rtcstack").addHandler(logging.NullHandler())
