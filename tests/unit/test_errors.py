"""The exception tree: one root, the documented parents, and the reason/status attributes."""

from __future__ import annotations

import pytest

from rtcstack import _errors as e


@pytest.mark.parametrize(
    ("cls", "parents"),
    [
        (e.ConfigError, (e.RtcstackError, ValueError)),
        (e.TokenError, (e.RtcstackError,)),
        (e.TokenRefreshError, (e.TokenError,)),
        (e.ConnectError, (e.RtcstackError,)),
        (e.ConnectTimeoutError, (e.ConnectError,)),
        (e.AuthRejectedError, (e.ConnectError,)),
        (e.TokenExpiredError, (e.ConnectError, e.TokenError)),
        (e.InvalidStateError, (e.RtcstackError,)),
    ],
)
def test_tree(cls: type[Exception], parents: tuple[type[Exception], ...]) -> None:
    assert cls.__bases__ == parents
    assert issubclass(cls, e.RtcstackError)


def test_every_error_is_exported_and_in_the_docstring() -> None:
    assert e.__doc__ is not None
    for name in e.__all__:
        assert issubclass(getattr(e, name), e.RtcstackError)
        assert name in e.__doc__


def test_token_error_reason() -> None:
    assert e.TokenError("bad").reason is None
    err = e.TokenError("expired", reason="token_expired")
    assert err.reason == "token_expired"
    assert str(err) == "expired"


def test_token_refresh_error_status() -> None:
    err = e.TokenRefreshError("refresh failed: HTTP 503", status=503)
    assert err.status == 503
    assert err.reason is None
    assert isinstance(err, e.TokenError)
    assert e.TokenRefreshError("x").status is None


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        (e.ConnectError, "unknown"),
        (e.ConnectTimeoutError, "connect_timeout"),
        (e.AuthRejectedError, "auth_rejected"),
        (e.TokenExpiredError, "token_expired"),
    ],
)
def test_connect_error_default_reasons(cls: type[e.ConnectError], reason: str) -> None:
    err = cls("failed")
    assert err.reason == reason
    assert str(err) == "failed"


def test_connect_error_explicit_reason() -> None:
    assert e.ConnectError("left", reason="room_deleted").reason == "room_deleted"


def test_token_expired_error_is_both() -> None:
    err = e.TokenExpiredError("token expired and no refresher")
    assert isinstance(err, e.TokenError)
    assert isinstance(err, e.ConnectError)
    assert err.reason == "token_expired"
    with pytest.raises(e.TokenError):
        raise err


def test_wrapping_keeps_the_cause() -> None:
    cause = OSError("boom")
    with pytest.raises(e.ConnectError) as info:
        try:
            raise cause
        except OSError as exc:
            raise e.ConnectError("connect failed", reason="network_error") from exc
    assert info.value.__cause__ is cause
