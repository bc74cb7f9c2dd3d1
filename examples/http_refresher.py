"""A token refresher backed by your app's HTTP endpoint: rtcstack calls it before a reconnect needs a fresh token.

python examples/http_refresher.py URL TOKEN https://auth.example.com/livekit-token
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from datetime import datetime

from rtcstack import CallOptions, create_call, http_token_refresher


async def main(url: str, token: str, endpoint: str, *, stay: float = 30.0) -> None:
    refresher = http_token_refresher(endpoint, json={"room": "demo"}, headers={"X-App": "example"})
    call = create_call(url, token, token_refresher=refresher, options=CallOptions(token_refresh_margin=60))

    @call.on("token_refreshed")
    def refreshed(expires_at: datetime) -> None:
        print(f"fresh token, valid until {expires_at:%H:%M:%S}")

    @call.on("token_refresh_failed")
    def failed(error: Exception) -> None:
        print(f"could not refresh the token: {error}")

    async with call:
        print(f"token expires at {call.token_expires_at:%H:%M:%S}")
        with contextlib.suppress(TimeoutError):
            await call.wait_for("disconnected", timeout=stay)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
