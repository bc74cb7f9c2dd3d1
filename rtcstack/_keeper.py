"""`TokenKeeper`: the token a call uses, and who gets it a fresh one.

It owns the token in use (the app's, the refresher's, or one the server pushed) and hands the pump the token to join
with. Once the call is live (`start`), a timer fires when the token enters the refresh margin (`due`): the call is
warned (`token_expired`) and the refresher is asked, and asked again with backoff until it gives a token that
`check_refreshed` accepts or ours expires. The rules are pure functions of `_tokens`; this module only runs them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ._errors import TokenError, TokenExpiredError, TokenRefreshError
from ._options import CallOptions, ReconnectPolicy
from ._room import connect_error
from ._tasks import Tasks
from ._tokens import (
    Refresher,
    TokenClaims,
    check_refreshed,
    check_usable,
    join_ask_timeout,
    join_refresh,
    refresh_delay,
    refresh_due,
    run_refresher,
)

__all__ = ["TokenKeeper"]

logger = logging.getLogger("rtcstack")

_RETRIES = ReconnectPolicy(max_attempts=None, initial_delay=1.0, max_delay=30.0, jitter=False, timeout=None)
"""The backoff between the asks of a refresher that failed: 1, 2, 4 ... 30 s, until the token expires."""


class TokenKeeper:
    """The token in use, its expiry timer and the refresher's asks. `emit` tells the call `token_expired`,
    `token_refreshed` and `token_refresh_failed`; `tasks` runs the refresh."""

    def __init__(
        self,
        token: str,
        claims: TokenClaims,
        refresher: Refresher | None,
        options: CallOptions,
        *,
        clock: Callable[[], datetime],
        tasks: Tasks,
        emit: Callable[..., None],
    ) -> None:
        self._token = token
        self._claims = claims
        self._refresher = refresher
        self._options = options
        self._clock = clock
        self._tasks = tasks
        self._emit = emit
        self._timer: asyncio.TimerHandle | None = None
        self._live = False
        self._warned_for: datetime | None = None
        self._refresh: asyncio.Future[bool] | None = None
        self._answered: asyncio.Future[None] | None = None
        self._backoff: asyncio.Future[None] | None = None

    @property
    def token(self) -> str:
        return self._token

    @property
    def claims(self) -> TokenClaims:
        return self._claims

    @property
    def can_refresh(self) -> bool:
        """True when there is a refresher to ask."""
        return self._refresher is not None

    @property
    def refreshing(self) -> bool:
        """True while the refresher is being asked (or waited for between asks)."""
        return self._refresh is not None

    def expired(self) -> bool:
        return self._clock() >= self._claims.expires_at

    def due_in(self) -> float | None:
        """Seconds until the timer calls `due`, or None when none is set."""
        timer = self._timer
        return None if timer is None else timer.when() - asyncio.get_running_loop().time()

    def scrub(self, text: str) -> str:
        """`text` with the token in use replaced by ``<token>``."""
        return text.replace(self._token, "<token>") if self._token else text

    async def for_join(self) -> str:
        """The token to join with; inside the margin the refresher is asked first, as `join_refresh` says. Raises
        `TokenExpiredError` when only an expired token is left and a `ConnectError` for one not valid yet."""
        step = join_refresh(self._claims, self._clock(), self._options.token_refresh_margin)
        if step is not None:
            self._warn()
            if self._refresher is not None:
                await (self._wait_refresh() if step == "wait" else self._ask())
            if self.expired():
                raise TokenExpiredError("the token has expired and no fresh token could be had")
        try:
            check_usable(self._claims, self._clock())
        except TokenError as exc:  # its 'nbf' is in the future: the server would refuse it
            raise connect_error(exc.reason or "auth_rejected", str(exc)) from None
        return self._token

    def start(self) -> None:
        """The call is live: from now on the timer follows the token in use."""
        self._live = True
        self._arm()

    def stop(self) -> None:
        """The call ended: no timer, no refresh."""
        self._live = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._refresh is not None:
            self._refresh.cancel()

    def due(self) -> None:
        """The token entered its margin (the timer's callback): warn, and ask the refresher in the background."""
        self._timer = None
        self._warn()
        if self._refresher is not None and self._refresh is None:
            self._start_refresh()

    def pushed(self, token: object) -> None:
        """The server pushed `token` (LiveKit refreshes the token of every joined participant): adopt it if
        `check_refreshed` accepts it."""
        if not isinstance(token, str):
            return
        try:
            claims = check_refreshed(self._claims, token)
        except TokenError as exc:
            logger.debug("ignoring a server-refreshed token: %s", exc)
            return
        self._adopt(token, claims)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = refresh_delay(self._claims, self._clock(), self._options.token_refresh_margin)
        self._timer = asyncio.get_running_loop().call_later(delay, self.due)

    def _warn(self) -> None:
        if self._warned_for != self._claims.expires_at:
            self._warned_for = self._claims.expires_at
            self._emit("token_expired", self._claims.expires_at)

    def _start_refresh(self) -> asyncio.Future[bool]:
        refresh = self._refresh = self._tasks.spawn(self._refresh_loop(), "token refresh")
        return refresh

    async def _wait_refresh(self) -> bool:
        refresh = self._refresh or self._start_refresh()
        return await asyncio.shield(refresh)

    async def _ask(self) -> None:
        """Wait for the refresher's next answer (asked at once if the refresh is in its backoff), good or bad, for at
        most `join_ask_timeout`; a failed refresh goes on in the background."""
        answered = self._answered
        if answered is None:
            answered = self._answered = asyncio.get_running_loop().create_future()
        refresh = self._refresh
        if refresh is None:
            refresh = self._start_refresh()
        elif self._backoff is not None and not self._backoff.done():
            self._backoff.set_result(None)
        waits: set[asyncio.Future[Any]] = {answered, refresh}
        timeout = join_ask_timeout(self._claims, self._clock(), self._options.token_refresh_timeout)
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    def _tell_answered(self) -> None:
        answered, self._answered = self._answered, None
        if answered is not None and not answered.done():
            answered.set_result(None)

    async def _refresh_loop(self) -> bool:
        """Ask the refresher until it gives an acceptable token (True) or ours has expired (False)."""
        refresher = self._refresher
        assert refresher is not None
        attempt = 0
        try:
            while True:
                try:
                    token = await run_refresher(refresher, timeout=self._options.token_refresh_timeout)
                    claims = check_refreshed(self._claims, token)
                except TokenRefreshError as exc:
                    if self._clock() < refresh_due(self._claims, self._options.token_refresh_margin):
                        return True  # the token in use was refreshed meanwhile (LiveKit pushed one): nothing failed
                    self._emit("token_refresh_failed", exc)
                    left = (self._claims.expires_at - self._clock()).total_seconds()
                    if left <= 0:
                        return False
                    self._tell_answered()
                    attempt += 1
                    delay = _RETRIES.next_delay(attempt, 0.0, "token_expired") or 0.0
                    backoff = self._backoff = asyncio.get_running_loop().create_future()
                    await asyncio.wait({backoff}, timeout=min(delay, left))  # a join cuts it short
                    continue
                self._adopt(token, claims)
                return True
        finally:
            self._refresh = self._backoff = None
            self._tell_answered()

    def _adopt(self, token: str, claims: TokenClaims) -> None:
        self._token = token
        self._claims = claims
        if self._live:
            self._arm()
        self._emit("token_refreshed", claims.expires_at)
