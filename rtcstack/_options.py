"""Call options and the reconnect policy: pydantic v2 models, validated (strict types), frozen, no extra keys.

Bad values raise ``ConfigError`` (a ``ValueError``) with pydantic's message, the ``pydantic.ValidationError`` as its
``__cause__``, when the options are built (constructor, ``model_validate``, ``model_validate_json``,
``model_validate_strings``, ``model_copy(update=...)``), before any call exists. Only ``model_construct``, which
pydantic defines as taking trusted values unchecked, does not validate.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._errors import ConfigError
from ._vocab import DisconnectReason

__all__ = ["CallOptions", "ReconnectPolicy", "connect_budget"]

_random = random.Random()
_O = TypeVar("_O", bound="_Options")


@contextlib.contextmanager
def _config_errors() -> Iterator[None]:
    try:
        yield
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc


class _Options(BaseModel):
    """A frozen, strictly validated model whose every way of being built raises ``ConfigError`` on a bad value."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        with _config_errors():
            super().__init__(**data)

    # Marks this __init__ as one that only validates (pydantic's own marker, as RootModel's): validation from a
    # dict (model_validate, a nested policy) then does not call it, so a ConfigError is not wrapped in another error.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # a function attribute pydantic reads

    @classmethod
    def model_validate(cls: type[_O], *args: Any, **kwargs: Any) -> _O:
        with _config_errors():
            return super().model_validate(*args, **kwargs)

    @classmethod
    def model_validate_json(cls: type[_O], *args: Any, **kwargs: Any) -> _O:
        with _config_errors():
            return super().model_validate_json(*args, **kwargs)

    @classmethod
    def model_validate_strings(cls: type[_O], *args: Any, **kwargs: Any) -> _O:
        with _config_errors():
            return super().model_validate_strings(*args, **kwargs)

    def model_copy(self: _O, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> _O:
        """A copy; with ``update`` it is validated like a new instance (pydantic's own copy would not check)."""
        copy = super().model_copy(deep=deep)
        if not update:
            return copy
        return type(self).model_validate({**dict(copy), **update})


class ReconnectPolicy(_Options):
    """When to rejoin after the SDK gives up on a transient disconnect: exponential backoff with full jitter.

    ``max_attempts`` counts rejoins in one reconnect episode (None: unlimited); ``timeout`` bounds the
    episode's duration in seconds (None: unlimited). The delay before rejoin ``n`` is drawn uniformly from
    ``[0, min(max_delay, initial_delay * multiplier ** (n - 1))]``; with ``jitter=False`` it is that cap.
    The draw uses the module's private ``random.Random`` (``_random``), which tests may seed or replace.

    To change the schedule, subclass and override :meth:`next_delay` (e.g. to wait longer after
    ``"server_shutdown"``); pass the instance as ``CallOptions(reconnect=MyPolicy())``.
    """

    max_attempts: int | None = Field(default=10, ge=1)
    initial_delay: float = Field(default=0.5, ge=0)
    max_delay: float = Field(default=10.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    jitter: bool = True
    timeout: float | None = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _max_delay_not_below_initial(self) -> ReconnectPolicy:
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must be >= initial_delay")
        return self

    def next_delay(self, attempt: int, elapsed: float, cause: DisconnectReason) -> float | None:
        """Seconds to wait before rejoin number ``attempt`` (1-based), or None to give up.

        ``elapsed`` is the time in seconds since the reconnect episode began, ``cause`` the reason of the failure
        that asks for this rejoin: the disconnect that began the episode for the first, then the failed rejoin's
        (e.g. ``"join_failure"``); unused here, available to subclasses. Gives up when ``attempt`` exceeds
        ``max_attempts`` or ``elapsed`` reached ``timeout``.
        """
        if self.max_attempts is not None and attempt > self.max_attempts:
            return None
        if self.timeout is not None and elapsed >= self.timeout:
            return None
        cap = self._cap(attempt)
        return _random.uniform(0.0, cap) if self.jitter else cap

    def _cap(self, attempt: int) -> float:
        """The backoff ceiling for ``attempt``, safe against float overflow for very large attempts."""
        if self.initial_delay == 0:
            return 0.0
        try:
            raw = self.initial_delay * self.multiplier ** max(attempt - 1, 0)
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, raw)


class CallOptions(_Options):
    """Options of one call; all durations are in seconds.

    ``connect_timeout``: the default total deadline of ``connect()``. ``reconnect``: the rejoin policy.
    ``token_refresh_margin``: how long before expiry a token counts as expiring (``token_expired`` fires and
    the refresher is called). ``token_refresh_timeout``: how long one refresher call may take (a join inside the
    margin waits at most that long for its answer). ``rejoin_grace``: when the call is back in the room through a
    full reconnect (the SDK's restart, or the call's rejoin), how long a participant who was in the call, is not in
    the room (yet) and was not seen leaving has to come back before ``participant_left`` (after a server's death
    everyone joins the room again at their own pace); 0: at once.
    ``media_stall_timeout``: how long a watched track may go without media before ``track_stalled`` (the call reads
    the Room's RTC stats twice per timeout); None turns the media-health watch off (no stats are read).
    ``auto_subscribe`` and ``single_peer_connection`` are passed on to ``livekit.rtc.RoomOptions``.
    """

    connect_timeout: float = Field(default=20.0, gt=0)
    reconnect: ReconnectPolicy = Field(default_factory=ReconnectPolicy)
    token_refresh_margin: float = Field(default=60.0, ge=0)
    token_refresh_timeout: float = Field(default=10.0, gt=0)
    rejoin_grace: float = Field(default=15.0, ge=0)
    auto_subscribe: bool = True
    single_peer_connection: bool = True
    media_stall_timeout: float | None = Field(default=2.0, gt=0)


def connect_budget(timeout: object, default: float) -> float:
    """The deadline of one `connect()`: `timeout`, or `default` when it is None; `ConfigError` unless positive and
    finite."""
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ConfigError("timeout must be a positive, finite number of seconds")
    return float(timeout)
