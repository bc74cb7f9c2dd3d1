"""LiveKitCluster: livekit-server nodes sharing a redis-server, behind a front that hands each connection to a node.

Like a deployment: each room is hosted on one node (the room -> node map is in Redis), a signal connection may reach
any node and is relayed to the room's, and the front (a `SignalProxy`, as a load balancer) sends each new connection
to the next live node in turn. `kill_node` is a machine's death: SIGKILL (the connections piped there end with it),
and the front stops sending there. The cluster counts the node as gone 5 s after its last stats; until then joins
to its rooms wait. redis-server is found as ``redis_binary``, ``$REDIS_SERVER_BIN`` or ``redis-server`` on PATH
(``scripts/redis-server`` installs Debian's package where it is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import secrets
import tempfile
from pathlib import Path

from livekit import api

from ._grants import BaseServer
from ._livekit import (
    LiveKitServerError,
    NodeConfig,
    Process,
    find_binary,
    free_port,
    start_node,
    start_on_free_ports,
)
from ._proxy import SignalProxy

__all__ = ["LiveKitCluster"]

logger = logging.getLogger("rtcstack.testing")

REDIS_ENV = "REDIS_SERVER_BIN"
_NODES_KEY = "nodes"
_ROOM_NODE_KEY = "room_node_map"
"""livekit-server's Redis hashes: node id -> Node, and room name -> node id."""
_REDIS_TIMEOUT = 2.0


class LiveKitCluster(BaseServer):
    """``nodes`` real livekit-server processes sharing a redis-server it starts, behind one front.

    ``url`` / ``http_url`` are the front's: each new connection goes to the next live node (round robin), so a
    call's signal and its RoomService requests may land on any node, as behind a load balancer. Every process logs
    into ``log_dir`` (``node-<i>.log``, ``redis.log``; a temporary directory unless given). Use as
    ``async with LiveKitCluster() as cluster``, or `start` / `close`.
    """

    def __init__(
        self,
        nodes: int = 2,
        *,
        binary: str | os.PathLike[str] | None = None,
        redis_binary: str | os.PathLike[str] | None = None,
        api_key: str = "devkey",
        api_secret: str | None = None,
        port: int = 0,
        departure_timeout: float = 5.0,
        empty_timeout: float = 30.0,
        log_level: str = "info",
        log_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise ValueError(f"nodes must be a positive int, not {nodes!r}")
        self.binary = find_binary(binary)
        self.redis_binary = find_binary(
            redis_binary,
            name="redis-server",
            env=REDIS_ENV,
            argument="redis_binary",
            how="Debian's package: apt-get install redis-server; scripts/redis-server installs it where it is "
            "missing and prints its path",
        )
        self.api_key = api_key
        self.api_secret = api_secret if api_secret is not None else secrets.token_urlsafe(32)
        if len(self.api_secret) < 32:
            raise ValueError("api_secret must be at least 32 characters (livekit-server refuses shorter ones)")
        self._size = nodes
        self._port = port
        self._departure_timeout = departure_timeout
        self._empty_timeout = empty_timeout
        self._log_level = log_level
        self._start_timeout = start_timeout
        self._given_log_dir = Path(log_dir) if log_dir is not None else None
        self._log_dir: Path | None = None
        self._redis: Process | None = None
        self._redis_port = 0
        self._nodes: list[tuple[Process, NodeConfig]] = []
        self._node_ids: list[str] = []
        self._front: SignalProxy | None = None
        self._turn = itertools.count()

    @property
    def _listening(self) -> bool:
        return self._front is not None

    def _state(self) -> str:
        return f"live nodes={self.live_nodes}"

    # -- lifetime -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start redis-server, the nodes (one after the other: each is known by the id it registers) and the front;
        returns once every node answers HTTP."""
        if self._front is not None:
            raise RuntimeError("LiveKitCluster already started")
        front = SignalProxy(self._pick)
        try:
            await front.start(self._port)
        except OSError as exc:
            raise LiveKitServerError(f"cannot listen on 127.0.0.1:{self._port}: {exc.strerror}") from exc
        self._front = front
        log_dir = self._log_dir = self._given_log_dir or Path(tempfile.mkdtemp(prefix="rtcstack-cluster-"))
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            await self._start_redis(log_dir)
            for index in range(self._size):
                await self._start_node(index, log_dir)
        except BaseException:
            await self.close()
            raise
        logger.info("LiveKitCluster of %d nodes listening on %s", self._size, self.url)

    async def _start_redis(self, log_dir: Path) -> None:
        def make() -> tuple[Process, int]:
            port = free_port()
            argv = [str(self.redis_binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(log_dir)]
            argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]  # nothing persisted
            probe = functools.partial(self._redis_answers, port)
            what = f"redis-server on port {port}"
            return Process(argv, log_dir / "redis.log", probe, what, self._start_timeout), port

        self._redis, self._redis_port = await start_on_free_ports(make)

    async def _redis_answers(self, port: int) -> bool:
        try:
            return await _redis(port, "PING") == "PONG"
        except (OSError, asyncio.TimeoutError, LiveKitServerError):
            return False

    async def _start_node(self, index: int, log_dir: Path) -> None:
        before = set(await self._registered())

        def config() -> NodeConfig:
            return NodeConfig.on_free_ports(
                {self.api_key: self.api_secret},
                departure_timeout=self._departure_timeout,
                empty_timeout=self._empty_timeout,
                log_level=self._log_level,
                redis_address=f"127.0.0.1:{self._redis_port}",
            )

        log_path = log_dir / f"node-{index}.log"
        self._nodes.append(await start_node(self.binary, config, log_path, f"node {index}", self._start_timeout))
        new = set(await self._registered()) - before  # it registers before it answers HTTP
        if len(new) != 1:
            raise LiveKitServerError(f"node {index} registered {len(new)} node ids in redis, not 1: {sorted(new)}")
        self._node_ids.append(new.pop())

    async def _registered(self) -> list[str]:
        keys = await _redis(self._redis_port, "HKEYS", _NODES_KEY)
        assert isinstance(keys, list)
        return [str(key) for key in keys]

    async def close(self) -> None:
        """Stop the front, every node (no orphan) and redis-server."""
        if self._front is not None:
            await self._front.close()
            self._front = None
        await asyncio.gather(*(process.stop() for process, _ in self._nodes))
        if self._redis is not None:
            await self._redis.stop()

    # -- where things are ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<front port>``, what ``Room.connect`` takes."""
        return f"ws://127.0.0.1:{self._started_front().port}"

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<front port>``, what ``livekit.api.LiveKitAPI`` takes."""
        return f"http://127.0.0.1:{self._started_front().port}"

    @property
    def log_dir(self) -> Path:
        """Where the nodes (``node-<i>.log``) and redis-server (``redis.log``) log."""
        if self._log_dir is None:
            raise RuntimeError("LiveKitCluster not started")
        return self._log_dir

    @property
    def redis_address(self) -> str:
        """``host:port`` of the redis-server the nodes share (known once started)."""
        return f"127.0.0.1:{self._redis_port}"

    @property
    def live_nodes(self) -> list[int]:
        """The indexes of the nodes whose process runs."""
        return [index for index, (process, _) in enumerate(self._nodes) if process.running]

    async def node_of(self, room: str) -> int:
        """The index of the node that hosts ``room``, as the cluster's room -> node map in Redis says (after a
        node's death it names the dead node until a join moves the room). `LookupError` when no node hosts it."""
        self._started_front()
        node_id = await _redis(self._redis_port, "HGET", _ROOM_NODE_KEY, room)
        if node_id is None:
            raise LookupError(f"no node hosts room {room!r}")
        if node_id not in self._node_ids:
            raise LiveKitServerError(f"room {room!r} is on node {node_id}, not one of this cluster's")
        return self._node_ids.index(str(node_id))

    def _pick(self) -> tuple[str, int] | None:
        live = self.live_nodes
        if not live:
            return None
        _, config = self._nodes[live[next(self._turn) % len(live)]]
        return "127.0.0.1", config.http_port

    def _started_front(self) -> SignalProxy:
        if self._front is None:
            raise RuntimeError("LiveKitCluster not started")
        return self._front

    # -- tokens and faults --------------------------------------------------------------------------------------

    async def create_room(self, room: str, node: int) -> None:
        """Create ``room`` on node ``node`` (RoomService.CreateRoom with its node id), so a test knows where it is."""
        self._check_index(node)
        async with api.LiveKitAPI(self.http_url, self.api_key, self.api_secret) as lk:
            await lk.room.create_room(api.CreateRoomRequest(name=room, node_id=self._node_ids[node]))

    async def kill_node(self, index: int) -> None:
        """SIGKILL node ``index`` (the connections piped to it end with it); the front sends no new ones there."""
        self._check_index(index)
        await self._nodes[index][0].kill()
        logger.info("LiveKitCluster: node %d killed", index)

    def _check_index(self, index: int) -> None:
        self._started_front()
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self._nodes):
            raise ValueError(f"no node {index!r}: the cluster has nodes 0 to {len(self._nodes) - 1}")


async def _redis(port: int, *args: str) -> object:
    """One command to the redis-server on ``port`` (RESP): its reply as str, int, None or a list of them."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), _REDIS_TIMEOUT)
    try:
        request = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            request.append(b"$%d\r\n%s\r\n" % (len(data), data))
        writer.write(b"".join(request))
        await writer.drain()
        return await asyncio.wait_for(_reply(reader), _REDIS_TIMEOUT)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _reply(reader: asyncio.StreamReader) -> object:
    line = (await reader.readuntil(b"\r\n"))[:-2].decode()
    kind, rest = line[:1], line[1:]
    if kind == "+":
        return rest
    if kind == "-":
        raise LiveKitServerError(f"redis-server: {rest}")
    if kind == ":":
        return int(rest)
    if kind == "$":
        size = int(rest)
        return None if size < 0 else (await reader.readexactly(size + 2))[:-2].decode()
    if kind == "*":
        size = int(rest)
        return None if size < 0 else [await _reply(reader) for _ in range(size)]
    raise LiveKitServerError(f"redis-server: unexpected reply {line!r}")
