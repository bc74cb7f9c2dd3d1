"""The rtcstack exception tree.

Every error rtcstack raises derives from one root::

    RtcstackError
     ├── ConfigError (also ValueError)   bad URL or options, unknown event name, non-callable handler
     ├── TokenError                      malformed, expired or wrongly scoped token   (.reason)
     │    ├── TokenRefreshError          the refresher raised, hung, or returned garbage  (.status)
     │    └── TokenExpiredError *        connect with an expired token and no usable refresher
     ├── ConnectError                    a connect failed; the call is "disconnected"  (.reason)
     │    ├── ConnectTimeoutError        the connect deadline passed
     │    ├── AuthRejectedError          the server refused a token that looked valid
     │    └── TokenExpiredError *        (also a TokenError)
     ├── InvalidStateError               a method called in the wrong connection state
     ├── PublishError                    the SDK refused to publish or unpublish a track
     └── (rtcstack.testing) LiveKitServerError   a livekit-server or redis-server that cannot be found or started

livekit and httpx errors are wrapped with ``raise ... from exc``. Messages and reprs never contain a token.
"""

from __future__ import annotations

from typing import ClassVar

from ._vocab import DisconnectReason

__all__ = [
    "AuthRejectedError",
    "ConfigError",
    "ConnectError",
    "ConnectTimeoutError",
    "InvalidStateError",
    "PublishError",
    "RtcstackError",
    "TokenError",
    "TokenExpiredError",
    "TokenRefreshError",
]


class RtcstackError(Exception):
    """Root of every error raised by rtcstack."""


class ConfigError(RtcstackError, ValueError):
    """Invalid configuration: a bad URL or options, an unknown event name, a handler that is not callable."""


class TokenError(RtcstackError):
    """A token is malformed, expired, or carries the wrong claims; ``reason`` is its disconnect reason."""

    def __init__(self, message: str, *, reason: DisconnectReason | None = None) -> None:
        super().__init__(message)
        self._token_reason = reason

    @property
    def reason(self) -> DisconnectReason | None:
        """The disconnect reason this error stands for (e.g. ``"token_expired"``), or None."""
        return self._token_reason


class TokenRefreshError(TokenError):
    """Getting a fresh token failed; ``status`` is the HTTP status of an HTTP refresher's error answer."""

    def __init__(self, message: str, *, status: int | None = None, reason: DisconnectReason | None = None) -> None:
        super().__init__(message, reason=reason)
        self.status = status


class ConnectError(RtcstackError):
    """A connect attempt failed and the call ended in ``"disconnected"`` with ``reason``."""

    default_reason: ClassVar[DisconnectReason] = "unknown"

    def __init__(self, message: str, *, reason: DisconnectReason | None = None) -> None:
        super().__init__(message)
        self._connect_reason: DisconnectReason = self.default_reason if reason is None else reason

    @property
    def reason(self) -> DisconnectReason:
        """Why the connect failed, as a disconnect reason (defaults to the subclass's ``default_reason``)."""
        return self._connect_reason


class ConnectTimeoutError(ConnectError):
    """The connect deadline passed; the underlying Room was closed."""

    default_reason: ClassVar[DisconnectReason] = "connect_timeout"


class AuthRejectedError(ConnectError):
    """The server rejected a token that decoded fine and had not expired."""

    default_reason: ClassVar[DisconnectReason] = "auth_rejected"


class TokenExpiredError(ConnectError, TokenError):
    """Connect was asked with an expired token and there was no refresher, or the refresher failed."""

    default_reason: ClassVar[DisconnectReason] = "token_expired"


class InvalidStateError(RtcstackError):
    """A method was called in a connection state that does not allow it."""


class PublishError(RtcstackError):
    """``publish_track()`` or ``unpublish_track()`` failed in the SDK (its error is the ``__cause__``)."""
