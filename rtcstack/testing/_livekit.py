"""LiveKitServer: a real livekit-server process behind the fault surface of LoopbackServer.

Faults come from outside the server: a `SignalProxy` in front of it (``drop_signal``, ``refuse_joins``), its
RoomService API (``leave``, ``delete_room``, by livekit-api), and its process (``restart``, ``kill``). The binary is
found as ``binary``, ``$LIVEKIT_SERVER_BIN`` or ``livekit-server`` on PATH; ``scripts/livekit-server`` builds the
pinned one from its Go module.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp
from livekit import api

from .._errors import RtcstackError
from ._grants import BaseServer
from ._proxy import SignalProxy

__all__ = ["LiveKitServer", "LiveKitServerError", "find_binary", "node_ip"]

logger = logging.getLogger("rtcstack.testing")

BINARY_ENV = "LIVEKIT_SERVER_BIN"
_STOP_TIMEOUT = 5.0
_SIOCGIFADDR = 0x8915
_PORTS = (20000, 32000)
_BIND_ATTEMPTS = 3
_T = TypeVar("_T")


class LiveKitServerError(RtcstackError):
    """A livekit-server (or the redis-server of a cluster) that cannot be found, started or reached."""


class PortInUseError(LiveKitServerError):
    """The server exited at start because a port it was given is taken."""


def find_binary(
    binary: str | os.PathLike[str] | None = None,
    *,
    name: str = "livekit-server",
    env: str = BINARY_ENV,
    argument: str = "binary",
    how: str = "scripts/livekit-server builds the pinned version with Go and prints its path",
) -> Path:
    """``binary``, else ``$env``, else ``name`` on PATH; an error naming all three, and ``how`` to get one."""
    if binary is not None:
        path = Path(binary)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LiveKitServerError(f"{name} binary {str(path)!r} is not an executable file")
        return path
    from_env = os.environ.get(env)
    if from_env:
        return find_binary(from_env, name=name)
    on_path = shutil.which(name)
    if on_path is not None:
        return Path(on_path)
    raise LiveKitServerError(f"no {name} binary: pass {argument}=..., set ${env}, or put {name} on PATH ({how})")


def node_ip() -> str:
    """The first IPv4 address of an interface other than ``lo``: what the server advertises for media (libwebrtc
    ignores ``lo``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            try:
                packed = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address on it
                continue
            return socket.inet_ntoa(packed[20:24])
    raise LiveKitServerError(
        "no network interface but lo has an IPv4 address; media needs one (libwebrtc ignores lo): run in a network "
        "namespace with a veth pair, as scripts/test does"
    )


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on every address, below the ephemeral range (where the clients' own sockets would collide)."""
    for _ in range(200):
        port = random.randrange(*_PORTS)
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise LiveKitServerError(f"no free {'TCP' if kind == socket.SOCK_STREAM else 'UDP'} port in {_PORTS}")


@dataclass(frozen=True)
class NodeConfig:
    """What one livekit-server process is given: its ports, keys, the address it advertises, and maybe a redis."""

    http_port: int
    rtc_tcp_port: int
    rtc_udp_port: int
    node_ip: str
    keys: Mapping[str, str]
    departure_timeout: float
    empty_timeout: float
    log_level: str
    redis_address: str | None = None

    @classmethod
    def on_free_ports(
        cls,
        keys: Mapping[str, str],
        *,
        departure_timeout: float,
        empty_timeout: float,
        log_level: str,
        redis_address: str | None = None,
    ) -> NodeConfig:
        """A config on ports free now, advertising `node_ip`."""
        return cls(
            http_port=free_port(),
            rtc_tcp_port=free_port(),
            rtc_udp_port=free_port(socket.SOCK_DGRAM),
            node_ip=node_ip(),
            keys=keys,
            departure_timeout=departure_timeout,
            empty_timeout=empty_timeout,
            log_level=log_level,
            redis_address=redis_address,
        )

    def yaml(self) -> str:
        """The config body (JSON is YAML; livekit-server rejects unknown keys)."""
        body: dict[str, object] = {
            "port": self.http_port,
            "bind_addresses": ["127.0.0.1"],
            "rtc": {
                "tcp_port": self.rtc_tcp_port,
                "udp_port": self.rtc_udp_port,
                "node_ip": self.node_ip,
                "use_external_ip": False,
            },
            "keys": dict(self.keys),
            "room": {"empty_timeout": int(self.empty_timeout), "departure_timeout": int(self.departure_timeout)},
            "logging": {"level": self.log_level},
        }
        if self.redis_address is not None:
            body["redis"] = {"address": self.redis_address}
        return json.dumps(body)


class Process:
    """One server process: started, waited for until it answers, stopped without an orphan.

    ``ready`` is the URL that answers 200 once the server is up, or a probe that returns True then.
    """

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        ready: str | Callable[[], Awaitable[bool]],
        what: str,
        start_timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = argv
        self.env = {**os.environ, **env} if env else None
        self.log_path = log_path
        self.ready = ready
        self.what = what
        self.start_timeout = start_timeout
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the process; returns once it is ``ready``. Raises `LiveKitServerError` (with the log's
        tail) when it exits first or does not answer within ``start_timeout``; `PortInUseError` when it exits on a
        port that is taken."""
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} start {self.what}\n".encode())
            log.flush()
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=self.env,
                )
            except OSError as exc:
                raise LiveKitServerError(f"cannot start {self.what} ({self.argv[0]}): {exc}") from exc
        try:
            await asyncio.wait_for(self._until_ready(), self.start_timeout)
        except BaseException as exc:
            await self.kill()
            if isinstance(exc, asyncio.TimeoutError):
                raise LiveKitServerError(
                    f"{self.what} did not answer within {self.start_timeout:g} s; its log: {self.log_path}\n"
                    f"{self.tail()}"
                ) from None
            raise

    async def _until_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.returncode is not None:
                    error = PortInUseError if "address already in use" in self.tail().lower() else LiveKitServerError
                    raise error(
                        f"{self.what} exited at start with status {proc.returncode}; its log: {self.log_path}\n"
                        f"{self.tail()}"
                    )
                if await self._answers(http):
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.05)

    async def _answers(self, http: aiohttp.ClientSession) -> bool:
        if not isinstance(self.ready, str):
            return await self.ready()
        try:
            async with http.get(self.ready, timeout=aiohttp.ClientTimeout(total=1)) as response:
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within a few seconds."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), _STOP_TIMEOUT)
        except asyncio.TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await asyncio.shield(proc.wait())

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def start_on_free_ports(make: Callable[[], tuple[Process, _T]]) -> tuple[Process, _T]:
    """Start the process ``make()`` gives (with what it says of it) and return both once it answers; when a port it
    was given was taken between our check and its bind, ``make()`` another on other ports."""
    attempts = _BIND_ATTEMPTS
    while True:
        process, made = make()
        try:
            await process.start()
            return process, made
        except PortInUseError:
            attempts -= 1
            if attempts == 0:
                raise


async def start_node(
    binary: Path, config: Callable[[], NodeConfig], log_path: Path, what: str, start_timeout: float
) -> tuple[Process, NodeConfig]:
    """Start a livekit-server with ``config()`` and return it once it answers HTTP."""

    def make() -> tuple[Process, NodeConfig]:
        node = config()
        process = Process(
            [str(binary)],
            log_path,
            f"http://127.0.0.1:{node.http_port}/",
            f"{what} on port {node.http_port}",
            start_timeout,
            env={"LIVEKIT_CONFIG": node.yaml()},  # not in argv: the keys would show in ps
        )
        return process, node

    return await start_on_free_ports(make)


class LiveKitServer(BaseServer):
    """A real livekit-server on free local ports, behind a signal proxy that injects faults.

    ``url`` / ``http_url`` are the proxy's (every connection passes through it). The server advertises the first
    non-``lo`` IPv4 address for media (``node_ip``). Its log goes to ``log_path``. Use as
    ``async with LiveKitServer() as server``, or `start` / `close`.
    """

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        api_key: str = "devkey",
        api_secret: str | None = None,
        port: int = 0,
        departure_timeout: float = 5.0,
        empty_timeout: float = 30.0,
        log_level: str = "info",
        log_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.binary = find_binary(binary)
        self._port = port
        self._start_timeout = start_timeout
        self.api_key = api_key
        self.api_secret = api_secret if api_secret is not None else secrets.token_urlsafe(32)
        if len(self.api_secret) < 32:
            raise ValueError("api_secret must be at least 32 characters (livekit-server refuses shorter ones)")
        self._departure_timeout = departure_timeout
        self._empty_timeout = empty_timeout
        self._log_level = log_level
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._process: Process | None = None
        self._proxy: SignalProxy | None = None
        self._config: NodeConfig | None = None

    @property
    def _listening(self) -> bool:
        return self._proxy is not None

    def _state(self) -> str:
        return f"running={self.running}"

    # -- lifetime -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the proxy and the server; returns once the server answers HTTP."""
        if self._proxy is not None:
            raise RuntimeError("LiveKitServer already started")
        proxy = SignalProxy(self._upstream)
        try:
            await proxy.start(self._port)
        except OSError as exc:
            raise LiveKitServerError(f"cannot listen on 127.0.0.1:{self._port}: {exc.strerror}") from exc
        self._proxy = proxy
        log_dir = self._log_dir or Path(tempfile.mkdtemp(prefix="rtcstack-livekit-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            config = await self._start_process(log_dir)
        except BaseException:
            await self.close()
            raise
        logger.info("LiveKitServer listening on %s (server port %d)", self.url, config.http_port)

    async def _start_process(self, log_dir: Path) -> NodeConfig:
        def config() -> NodeConfig:
            return NodeConfig.on_free_ports(
                {self.api_key: self.api_secret},
                departure_timeout=self._departure_timeout,
                empty_timeout=self._empty_timeout,
                log_level=self._log_level,
            )

        self._process, self._config = await start_node(
            self.binary, config, log_dir / "livekit-server.log", "livekit-server", self._start_timeout
        )
        return self._config

    async def close(self) -> None:
        """Stop the server process (no orphan) and the proxy."""
        if self._process is not None:
            await self._process.stop()
        if self._proxy is not None:
            await self._proxy.close()
            self._proxy = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def log_path(self) -> Path:
        """The server's log file (stdout and stderr of every start)."""
        if self._process is None:
            raise RuntimeError("LiveKitServer not started")
        return self._process.log_path

    def _upstream(self) -> tuple[str, int] | None:
        if not self.running or self._config is None:
            return None
        return "127.0.0.1", self._config.http_port

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<proxy port>``, what ``Room.connect`` takes."""
        return f"ws://127.0.0.1:{self._started_proxy().port}"

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<proxy port>``, what ``livekit.api.LiveKitAPI`` takes."""
        return f"http://127.0.0.1:{self._started_proxy().port}"

    def _started_proxy(self) -> SignalProxy:
        if self._proxy is None:
            raise RuntimeError("LiveKitServer not started")
        return self._proxy

    # -- tokens -------------------------------------------------------------------------------------------------

    # -- faults -------------------------------------------------------------------------------------------------

    async def drop_signal(self, identity: str) -> None:
        """Cut ``identity``'s signal connection at the proxy (no close frame): the SDK resumes."""
        if not self._started_proxy().drop(identity):
            raise LookupError(f"no signal connection of {identity!r}")

    def refuse_joins(self, count: int = 1, status: int = 503, identity: str | None = None) -> None:
        """Answer the next ``count`` joins and resumes (of ``identity``, or anyone) with HTTP ``status`` at the proxy.

        With 401 the proxy answers that identity's validate with 401 too (the SDK then gives up at once, as with
        LoopbackServer); other statuses make the SDK retry.
        """
        if count < 0 or not 400 <= status <= 599:
            raise ValueError("count must be >= 0 and status an HTTP error status")
        self._started_proxy().refuse(count, status, identity)

    async def leave(self, identity: str, room: str | None = None) -> None:
        """Remove ``identity`` by RoomService.RemoveParticipant (the client gets LiveKit's reason)."""
        room = room or self._started_proxy().room_of(identity)
        if room is None:
            raise LookupError(f"no signal connection of {identity!r}; name its room")
        async with self._api() as lk:
            await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity=identity))

    async def delete_room(self, room: str) -> None:
        """Delete ``room`` by RoomService.DeleteRoom: everyone in it gets leave(room_deleted)."""
        async with self._api() as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))

    async def restart(self) -> None:
        """Stop the process and start it again on the same ports (rooms and sessions are gone)."""
        process = self._started_process()
        await process.kill()
        self._started_proxy().abort_all()
        await process.start()

    async def kill(self) -> None:
        """SIGKILL the process; it is not started again. The proxy then refuses every connection."""
        await self._started_process().kill()
        self._started_proxy().abort_all()

    def _started_process(self) -> Process:
        if self._process is None:
            raise RuntimeError("LiveKitServer not started")
        return self._process

    def _api(self) -> api.LiveKitAPI:
        if self._config is None:
            raise RuntimeError("LiveKitServer not started")
        return api.LiveKitAPI(f"http://127.0.0.1:{self._config.http_port}", self.api_key, self.api_secret)
