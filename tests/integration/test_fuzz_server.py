"""Random frames on LoopbackServer's signal socket after a valid join never crash it: no unhandled error, and a
normal client joins and is served afterwards. Hypothesis drives the frames; each example is a raw websocket
client that joins, sends them, and goes. The examples are derandomized (the same ones every run) and every input
that ever failed is an `@example`."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from livekit import rtc
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from rtcstack.testing import LoopbackServer
from tests.offers import MALFORMED_OFFERS

_T = TypeVar("_T")


def _simulate(field: str) -> pr.SignalRequest:
    """A SimulateScenario with ``field`` (one of its oneof) set to 1 or True."""
    scenario = pr.SimulateScenario()
    kind = pr.SimulateScenario.DESCRIPTOR.fields_by_name[field].type
    setattr(scenario, field, True if kind == FieldDescriptor.TYPE_BOOL else 1)
    return pr.SignalRequest(simulate=scenario)


texts = st.text(max_size=40)
SDP_LINES = [
    "v=0\r\n",
    "o=- 1 1 IN IP4 0.0.0.0\r\n",
    "s=-\r\n",
    "t=0 0\r\n",
    "a=group:BUNDLE 0\r\n",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
    "c=IN IP4 0.0.0.0\r\n",
    "a=mid:0\r\n",
    "a=ice-ufrag:abcd\r\n",
    "a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n",
    "a=fingerprint:sha-256 00:11\r\n",
    "a=setup:actpass\r\n",
    "a=sctp-port:5000\r\n",
    "a=rtpmap:111 opus/48000/2\r\n",
]
sdps = texts | st.lists(st.sampled_from(SDP_LINES), max_size=14).map("".join)
ints = st.integers(-(2**63), 2**63 - 1)
requests = st.one_of(
    st.builds(lambda t: pr.SignalRequest(ping_req=pr.Ping(timestamp=t)), ints),
    st.builds(lambda t: pr.SignalRequest(ping=t), ints),
    st.builds(
        lambda sdp, i: pr.SignalRequest(offer=pr.SessionDescription(type="offer", sdp=sdp, id=i)),
        sdps,
        st.integers(0, 2**32 - 1),
    ),
    st.builds(lambda sdp: pr.SignalRequest(answer=pr.SessionDescription(type="answer", sdp=sdp)), sdps),
    st.builds(
        lambda c, t: pr.SignalRequest(trickle=pr.TrickleRequest(candidateInit=c, target=t)),
        texts | st.just('{"candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host", "sdpMid": "0"}'),
        st.sampled_from([0, 1, 7]),
    ),
    st.builds(
        lambda cid, name, kind, source: pr.SignalRequest(
            add_track=pr.AddTrackRequest(cid=cid, name=name, type=kind, source=source)
        ),
        texts,
        texts,
        st.sampled_from([0, 1, 2, 99]),
        st.sampled_from([0, 1, 2, 99]),
    ),
    st.builds(lambda sid, m: pr.SignalRequest(mute=pr.MuteTrackRequest(sid=sid, muted=m)), texts, st.booleans()),
    st.builds(
        lambda m, n, a, r: pr.SignalRequest(
            update_metadata=pr.UpdateParticipantMetadata(metadata=m, name=n, attributes=a, request_id=r)
        ),
        texts,
        texts,
        st.dictionaries(texts, texts, max_size=3),
        st.integers(0, 2**32 - 1),
    ),
    st.builds(_simulate, st.sampled_from(sorted(pr.SimulateScenario.DESCRIPTOR.fields_by_name))),
    st.just(pr.SignalRequest(leave=pr.LeaveRequest())),
    st.just(pr.SignalRequest(sync_state=pr.SyncState())),
    st.builds(lambda sids: pr.SignalRequest(subscription=pr.UpdateSubscription(track_sids=sids)), st.lists(texts)),
    st.builds(lambda r: pr.SignalRequest(update_layers=pr.UpdateVideoLayers(track_sid=r)), texts),
)


def _offer(sdp: str) -> bytes:
    return pr.SignalRequest(offer=pr.SessionDescription(type="offer", sdp=sdp)).SerializeToString()


def _flip(data: bytes, at: int, byte: int) -> bytes:
    if not data:
        return bytes([byte])
    at %= len(data)
    return data[:at] + bytes([byte]) + data[at + 1 :]


frames = st.one_of(
    st.binary(max_size=256),
    st.text(max_size=256),
    requests.map(lambda r: r.SerializeToString()),
    requests.map(json_format.MessageToJson),
    st.builds(_flip, requests.map(lambda r: r.SerializeToString()), st.integers(0, 255), st.integers(0, 255)),
)


def _join_url(server: LoopbackServer) -> str:
    inner = pr.JoinRequest(client_info=pm.ClientInfo(sdk=pm.ClientInfo.PYTHON, protocol=16))
    wrapped = pr.WrappedJoinRequest(
        compression=pr.WrappedJoinRequest.GZIP, join_request=gzip.compress(inner.SerializeToString())
    )
    return f"{server.url}/rtc/v1?join_request={base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()}"


async def _raw_session(server: LoopbackServer, http: aiohttp.ClientSession, sent: list[bytes | str]) -> None:
    """Join as mallory, send ``sent``, read what comes back for a moment, leave; returns once the server's handler
    of this socket has ended (so that what it logs belongs to this example)."""
    headers = {"Authorization": f"Bearer {server.token('mallory', room='demo')}"}
    async with http.ws_connect(_join_url(server), headers=headers) as ws:
        first = pr.SignalResponse.FromString(await ws.receive_bytes(timeout=5))
        assert first.WhichOneof("message") == "join"
        handler = set(server._handlers)  # the server's task serving this socket (no other client is connected)
        for frame in sent:
            if ws.closed:
                break
            try:
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
            except (ConnectionError, aiohttp.ClientError):
                break
        try:
            for _ in range(100):  # what the frames made the server say, until it goes quiet or closes
                if (await ws.receive(timeout=0.05)).type != aiohttp.WSMsgType.BINARY:
                    break
        except asyncio.TimeoutError:
            pass
    await asyncio.wait(handler, timeout=5)


async def _normal_client(server: LoopbackServer) -> tuple[str, list[str]]:
    """A real SDK client joins and updates its metadata: what the server then has for it, and who is in."""
    room = rtc.Room()
    await room.connect(server.url, server.token("alice", room="demo"))
    try:
        await room.local_participant.set_metadata("still served")
        return server.registry.find("alice").info.metadata, server.participants("demo")
    finally:
        await room.disconnect()


class Trouble(logging.Handler):
    """Collects error records of the server's stack (aiohttp, asyncio, the server's own logger)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def trouble() -> Iterator[Trouble]:
    handler = Trouble()
    loggers = [logging.getLogger(name) for name in ("aiohttp", "asyncio", "rtcstack.testing", "aiortc", "aioice")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.mark.timeout(60)
def test_random_frames_after_a_valid_join_never_crash_the_server(trouble: Trouble) -> None:
    """Synchronous on purpose: hypothesis runs each example to completion on one event loop owned by the test."""
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, context: trouble.records.append(_record(context)))

    def run(coro: Coroutine[Any, Any, _T]) -> _T:
        return loop.run_until_complete(coro)

    server = LoopbackServer(ping_interval=1, ping_timeout=15, departure_timeout=5.0)
    http: aiohttp.ClientSession | None = None
    try:
        run(server.start())
        http = run(_open_http())

        @settings(
            max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
        )
        @given(sent=st.lists(frames, max_size=12))
        @example(sent=[_offer(MALFORMED_OFFERS["unreadable-m-line"])])
        @example(sent=[_offer(MALFORMED_OFFERS["forbidden-payload-type"])])
        @example(sent=[_offer(MALFORMED_OFFERS["unknown-setup"])])
        @example(sent=[_offer(MALFORMED_OFFERS["no-dtls"])])
        def raw_client(sent: list[bytes | str]) -> None:
            assert http is not None
            trouble.records.clear()
            run(_raw_session(server, http, sent))
            assert [r.getMessage() for r in trouble.records] == []

        raw_client()
        metadata, present = run(_normal_client(server))
        assert metadata == "still served" and "alice" in present
        assert [r.getMessage() for r in trouble.records] == []
    finally:
        if http is not None:
            run(http.close())
        run(server.close())
        run(loop.shutdown_asyncgens())
        loop.close()


async def _open_http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def _record(context: dict[str, Any]) -> logging.LogRecord:
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 0, str(context.get("message")), None, None)
