"""Call options and the reconnect policy: pydantic v2 models, validated (strict types), frozen, no extra keys.

Bad values raise ``pydantic.ValidationError`` (a ``ValueError``) when the options are built, before any call exists.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._vocab import DisconnectReason

__all__ = ["CallOptions", "ReconnectPolicy"]

_random = random.Random()
_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class ReconnectPolicy(BaseModel):
    """When to rejoin after the SDK gives up on a transient disconnect: exponential backoff with full jitter.

    ``max_attempts`` counts rejoins in one reconnect episode (None: unlimited); ``timeout`` bounds the
    episode's duration in seconds (None: unlimited). The delay before rejoin ``n`` is drawn uniformly from
    ``[0, min(max_delay, initial_delay * multiplier ** (n - 1))]``; with ``jitter=False`` it is that cap.
    The draw uses the module's private ``random.Random`` (``_random``), which tests may seed or replace.

    To change the schedule, subclass and override :meth:`next_delay` (e.g. to wait longer after
    ``"server_shutdown"``); pass the instance as ``CallOptions(reconnect=MyPolicy())``.
    """

    model_config = _CONFIG

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


class CallOptions(BaseModel):
    """Options of one call; all durations are in seconds.

    ``connect_timeout``: the default total deadline of ``connect()``. ``reconnect``: the rejoin policy.
    ``token_refresh_margin``: how long before expiry a token counts as expiring (``token_expired`` fires and
    the refresher is called). ``token_refresh_timeout``: how long one refresher call may take.
    ``auto_subscribe`` and ``single_peer_connection`` are passed on to ``livekit.rtc.RoomOptions``.
    """

    model_config = _CONFIG

    connect_timeout: float = Field(default=20.0, gt=0)
    reconnect: ReconnectPolicy = Field(default_factory=ReconnectPolicy)
    token_refresh_margin: float = Field(default=60.0, ge=0)
    token_refresh_timeout: float = Field(default=10.0, gt=0)
    auto_subscribe: bool = True
    single_peer_connection: bool = True
