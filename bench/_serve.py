"""The server a benchmark runs against (`--server`): LoopbackServer or a real livekit-server (LiveKitServer).

`served` runs it in a child process, so that the figures of the clients in this one hold no server work (nor, for
livekit-server, the work of its signal proxy): `python -m bench._serve` reads ``server``, ``api_key`` and
``api_secret`` as JSON on its first stdin line, prints the server's URL as one line, and serves until stdin closes.
`in_process` makes one in this process, for benchmarks that inject faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from livekit import api

from rtcstack.testing import LiveKitServer, LoopbackServer

__all__ = ["SERVERS", "AnyServer", "Served", "in_process", "served"]

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ("loopback", "livekit")
AnyServer = LoopbackServer | LiveKitServer


def in_process(kind: str, api_key: str = "devkey", api_secret: str | None = None) -> AnyServer:
    """A server of ``kind`` (one of `SERVERS`), not started: use it as ``async with``."""
    secret = api_secret or secrets.token_urlsafe(32)
    if kind == "livekit":
        return LiveKitServer(api_key=api_key, api_secret=secret)
    return LoopbackServer(api_key=api_key, api_secret=secret)


class Served:
    """The URL of a server in a child process, and tokens it accepts."""

    def __init__(self, url: str, api_key: str, api_secret: str, pid: int) -> None:
        self.url = url
        self.pid = pid
        """The server process, whose CPU time a benchmark may read."""
        self._key, self._secret = api_key, api_secret

    def token(self, identity: str, room: str, ttl: float = 600) -> str:
        grants = api.VideoGrants(room_join=True, room=room)
        token = api.AccessToken(self._key, self._secret).with_identity(identity).with_grants(grants)
        return token.with_ttl(timedelta(seconds=ttl)).to_jwt()


@contextlib.asynccontextmanager
async def served(kind: str = "loopback") -> AsyncIterator[Served]:
    """Start a server of ``kind`` in a child process; it stops when the block ends."""
    key, secret = "devkey", secrets.token_urlsafe(32)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench._serve", cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(json.dumps({"server": kind, "api_key": key, "api_secret": secret}).encode() + b"\n")
        await child.stdin.drain()
        url = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
        if not url:
            raise RuntimeError("the server process did not start")
        yield Served(url, key, secret, child.pid)
    finally:
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 30)
        except asyncio.TimeoutError:
            child.kill()
            await child.wait()


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    keys = json.loads(await reader.readline())
    async with in_process(keys["server"], keys["api_key"], keys["api_secret"]) as server:
        print(server.url, flush=True)
        await reader.read()


if __name__ == "__main__":
    asyncio.run(_serve())
