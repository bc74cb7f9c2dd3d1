"""Bad input from a raw websocket client: each gets what the real server gives, and others keep being served."""

from __future__ import annotations

import asyncio
import base64
import datetime
import gzip
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from livekit import api
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from rtcstack.testing import LoopbackServer
from tests.offers import MALFORMED_OFFERS

if TYPE_CHECKING:
    from conftest import Connect

WAIT = 15.0


def _join_request(**fields: object) -> str:
    inner = pr.JoinRequest(client_info=pm.ClientInfo(sdk=pm.ClientInfo.PYTHON, protocol=16), **fields)
    wrapped = pr.WrappedJoinRequest(
        compression=pr.WrappedJoinRequest.GZIP, join_request=gzip.compress(inner.SerializeToString())
    )
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _raw_join(
    http: aiohttp.ClientSession, server: LoopbackServer, identity: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(
        f"{server.url}/rtc/v1", params={"join_request": _join_request()}, headers=_headers(server.token(identity))
    )
    first = await _response(ws, "the JoinResponse")
    assert first.WhichOneof("message") == "join"
    assert first.join.participant.identity == identity
    return ws


async def _ping(ws: aiohttp.ClientWebSocketResponse) -> pr.Pong:
    await ws.send_bytes(pr.SignalRequest(ping_req=pr.Ping(timestamp=42)).SerializeToString())
    return await _pong(ws)


async def _pong(ws: aiohttp.ClientWebSocketResponse) -> pr.Pong:
    """The next pong_resp (what the server sends before it, e.g. participant updates, is skipped)."""
    while True:
        response = await _response(ws, "a pong")
        if response.WhichOneof("message") == "pong_resp":
            return response.pong_resp


async def _response(ws: aiohttp.ClientWebSocketResponse, what: str) -> pr.SignalResponse:
    try:
        frame = await ws.receive_bytes(timeout=WAIT)
    except asyncio.TimeoutError:
        pytest.fail(f"{what} did not come within {WAIT} s")
    return pr.SignalResponse.FromString(frame)


async def _closed(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """Skip what the server still sends; the message that ended the socket."""
    try:
        while (msg := await ws.receive(timeout=WAIT)).type == aiohttp.WSMsgType.BINARY:
            pass
    except asyncio.TimeoutError:
        pytest.fail(f"the server did not close the socket within {WAIT} s")
    return msg


async def _status(
    http: aiohttp.ClientSession,
    url: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(url, params=params, headers=headers)
    return caught.value.status


@pytest.mark.parametrize(
    "join_request", ["!!not base64!!", "AAAA", base64.urlsafe_b64encode(b"\x08\x01\x12\x03abc").decode()]
)
async def test_malformed_join_request_is_400(
    server: LoopbackServer, connect: Connect, http: aiohttp.ClientSession, join_request: str
) -> None:
    url = f"{server.url}/rtc/v1"
    headers = _headers(server.token("mallory"))

    assert await _status(http, url, params={"join_request": join_request}, headers=headers) == 400
    assert await _status(http, url, headers=headers) == 400

    await connect("alice")
    assert server.participants("demo") == ["alice"]


async def test_bad_tokens_are_401(server: LoopbackServer, http: aiohttp.ClientSession) -> None:
    url = f"{server.url}/rtc/v1"
    params = {"join_request": _join_request()}
    other = LoopbackServer(api_key=server.api_key, api_secret="x" * 40)
    bad_tokens = [
        server.token("mallory", ttl=-600),
        other.token("mallory"),
        "not.a.jwt",
    ]
    for token in bad_tokens:
        assert await _status(http, url, params=params, headers=_headers(token)) == 401
    assert await _status(http, url, params=params) == 401

    ws = await _raw_join(http, server, "alice")
    assert (await _ping(ws)).last_ping_timestamp == 42
    await ws.close()


async def test_plain_get_is_404(server: LoopbackServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.http_url}/rtc/v1", headers=_headers(server.token("alice"))) as response:
        assert response.status == 404


async def test_garbage_frame_closes_only_that_socket(
    server: LoopbackServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    alice = await connect("alice")
    ws = await _raw_join(http, server, "mallory")

    await ws.send_bytes(b"\xff\xff\xff\xff garbage")

    msg = await _closed(ws)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await ws.close()
    await alice.room.local_participant.set_metadata("still served")
    assert server.registry.find("alice").info.metadata == "still served"


async def test_unknown_and_text_messages_are_tolerated(server: LoopbackServer, http: aiohttp.ClientSession) -> None:
    ws = await _raw_join(http, server, "mallory")

    await ws.send_bytes(b"")
    await ws.send_bytes(b"\xf8\x06\x01")
    await ws.send_str('{"pingReq": {"timestamp": "7"}}')

    assert (await _pong(ws)).last_ping_timestamp == 7  # the text frame's ping, answered in order
    assert (await _ping(ws)).last_ping_timestamp == 42
    assert server.participants("default") == ["mallory"]
    await ws.close()


async def test_unknown_resume_is_asked_to_reconnect(server: LoopbackServer, http: aiohttp.ClientSession) -> None:
    ws = await http.ws_connect(
        f"{server.url}/rtc/v1",
        params={"join_request": _join_request(reconnect=True, participant_sid="PA_unknown")},
        headers=_headers(server.token("mallory")),
    )

    response = await _response(ws, "the answer to the resume")

    assert response.leave.action == pr.LeaveRequest.RECONNECT
    assert response.leave.reason == pm.STATE_MISMATCH
    await ws.close()


async def test_a_subscription_to_no_such_track_is_answered_track_not_found(
    server: LoopbackServer, http: aiohttp.ClientSession
) -> None:
    """As LiveKit answers it (SubscriptionResponse, SE_TRACK_NOTFOUND); a track announced whose media has not
    arrived yet is no error: the ping after it is answered with nothing before it."""
    mallory = await _raw_join(http, server, "mallory")
    add = pr.AddTrackRequest(cid="mic", name="mic", type=pm.AUDIO, source=pm.TrackSource.MICROPHONE)
    await mallory.send_bytes(pr.SignalRequest(add_track=add).SerializeToString())
    while (published := await _response(mallory, "track_published")).WhichOneof("message") != "track_published":
        pass
    announced = published.track_published.track.sid
    eve = await _raw_join(http, server, "eve")

    def subscribe(sid: str) -> bytes:
        update = pr.UpdateSubscription(track_sids=[sid], subscribe=True)
        return pr.SignalRequest(subscription=update).SerializeToString()

    await eve.send_bytes(subscribe(announced))
    await eve.send_bytes(pr.SignalRequest(ping_req=pr.Ping(timestamp=1)).SerializeToString())
    before_pong = []
    while (response := await _response(eve, "a pong")).WhichOneof("message") != "pong_resp":
        before_pong.append(response.WhichOneof("message"))
    assert "subscription_response" not in before_pong

    await eve.send_bytes(subscribe("TR_nothing"))
    while (response := await _response(eve, "a SubscriptionResponse")).WhichOneof("message") != "subscription_response":
        pass
    assert response.subscription_response.track_sid == "TR_nothing"
    assert response.subscription_response.err == pm.SE_TRACK_NOTFOUND
    assert (await _ping(eve)).last_ping_timestamp == 42
    await eve.close()
    await mallory.close()


@pytest.mark.parametrize("sdp", list(MALFORMED_OFFERS.values()), ids=list(MALFORMED_OFFERS))
async def test_a_malformed_offer_gets_a_final_leave_and_one_warning(
    server: LoopbackServer,
    connect: Connect,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    sdp: str,
) -> None:
    alice = await connect("alice")
    ws = await _raw_join(http, server, "mallory")
    caplog.set_level(logging.INFO, logger="rtcstack.testing")

    await ws.send_bytes(pr.SignalRequest(offer=pr.SessionDescription(type="offer", sdp=sdp)).SerializeToString())

    while (response := await _response(ws, "the leave")).WhichOneof("message") != "leave":
        pass
    assert (response.leave.action, response.leave.reason) == (pr.LeaveRequest.DISCONNECT, pm.STATE_MISMATCH)
    await _closed(ws)
    await ws.close()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith(("rtcstack", "aiortc"))]
    assert len(said) == 1 and said[0][0] == "WARNING" and "refused a malformed offer" in said[0][1], said
    await alice.room.local_participant.set_metadata("still served")
    assert server.participants("demo") == ["alice"]


async def test_garbage_text_frame_closes_only_that_socket(
    server: LoopbackServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    ws = await _raw_join(http, server, "mallory")

    await ws.send_str("not json at all")

    msg = await _closed(ws)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await ws.close()
    alice = await connect("alice")
    await alice.room.local_participant.set_metadata("still served")
    assert server.registry.find("alice").info.metadata == "still served"


# -- Twirp RoomService -------------------------------------------------------------------------------------------

_TWIRP = "/twirp/livekit.RoomService/"
_JSON = {"Content-Type": "application/json"}
_PROTOBUF = {"Content-Type": "application/protobuf"}


def _api_token(server: LoopbackServer, ttl: float = 600, secret: str | None = None, **grants: Any) -> str:
    token = api.AccessToken(server.api_key, secret or server.api_secret).with_grants(api.VideoGrants(**grants))
    return token.with_ttl(datetime.timedelta(seconds=ttl)).to_jwt()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _assert_still_served(server: LoopbackServer, connect: Connect, http: aiohttp.ClientSession) -> None:
    """A well-behaved client joins and a well-formed Twirp call answers."""
    await connect("bob")
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret, session=http) as client:
        listed = await client.room.list_participants(api.ListParticipantsRequest(room="demo"))
    assert "bob" in [p.identity for p in listed.participants]


_ADMIN = {"room_admin": True, "room": "demo"}


@pytest.mark.parametrize(
    ("http_method", "method", "headers", "body", "status", "code"),
    [
        pytest.param("POST", "ListParticipants", _JSON, b"{not json", 400, "malformed", id="bad-json"),
        pytest.param("POST", "ListParticipants", _JSON, b'["demo"]', 400, "malformed", id="json-not-an-object"),
        pytest.param("POST", "ListParticipants", _PROTOBUF, b"\xff\xff\xff", 400, "malformed", id="bad-protobuf"),
        pytest.param(
            "POST",
            "GetParticipant",
            _JSON,
            b'{"room": "demo", "identity": "nobody"}',
            404,
            "not_found",
            id="unknown-participant",
        ),
        pytest.param("POST", "DeleteRoom", _JSON, b'{"room": "nowhere"}', 404, "not_found", id="unknown-room"),
        pytest.param("POST", "Nope", _JSON, b"{}", 404, "bad_route", id="unknown-method"),
        pytest.param("GET", "ListParticipants", _JSON, b"", 404, "bad_route", id="not-post"),
        pytest.param(
            "POST", "ListParticipants", {"Content-Type": "text/plain"}, b"{}", 404, "bad_route", id="content-type"
        ),
        pytest.param("POST", "CreateRoom", _JSON, b'{"name": "demo"}', 501, "unimplemented", id="unimplemented"),
    ],
)
async def test_twirp_bad_requests(
    server: LoopbackServer,
    connect: Connect,
    http: aiohttp.ClientSession,
    http_method: str,
    method: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
) -> None:
    await connect("alice")
    token = _api_token(server, room_create=True, **_ADMIN)

    async with http.request(
        http_method, server.http_url + _TWIRP + method, data=body, headers=headers | _bearer(token)
    ) as response:
        assert response.status == status
        assert (await response.json())["code"] == code

    await _assert_still_served(server, connect, http)


@pytest.mark.parametrize(
    ("method", "token"),
    [
        pytest.param("ListRooms", lambda s: _api_token(s, **_ADMIN), id="list-rooms-without-room-list"),
        pytest.param("DeleteRoom", lambda s: _api_token(s, **_ADMIN), id="delete-room-without-room-create"),
        pytest.param("ListParticipants", lambda s: _api_token(s, room_admin=True, room="other"), id="other-room"),
        pytest.param("RemoveParticipant", lambda s: s.token("mallory", room="demo"), id="participant-token"),
        pytest.param("UpdateParticipant", lambda s: _api_token(s, room_list=True, room_create=True), id="no-admin"),
        pytest.param("SendData", lambda s: None, id="no-token"),
    ],
)
async def test_twirp_wrong_grants_are_unauthenticated(
    server: LoopbackServer,
    connect: Connect,
    http: aiohttp.ClientSession,
    method: str,
    token: Callable[[LoopbackServer], str | None],
) -> None:
    await connect("alice")
    minted = token(server)
    headers = _JSON | (_bearer(minted) if minted is not None else {})
    body = b'{"room": "demo", "identity": "alice", "metadata": "hacked"}'

    async with http.post(server.http_url + _TWIRP + method, data=body, headers=headers) as response:
        assert response.status == 401
        assert await response.json() == {"code": "unauthenticated", "msg": "permissions denied"}

    assert server.participants("demo") == ["alice"]
    assert server.registry.find("alice").info.metadata == ""
    await _assert_still_served(server, connect, http)


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(lambda s: f"Bearer {_api_token(s, ttl=-600, room_list=True)}", id="expired"),
        pytest.param(lambda s: f"Bearer {_api_token(s, secret='w' * 40, room_list=True)}", id="wrongly-signed"),
        pytest.param(lambda s: "Bearer not.a.jwt", id="not-a-jwt"),
        pytest.param(lambda s: f"Basic {_api_token(s, room_list=True)}", id="not-bearer"),
    ],
)
async def test_twirp_bad_tokens_are_refused_before_routing(
    server: LoopbackServer,
    connect: Connect,
    http: aiohttp.ClientSession,
    authorization: Callable[[LoopbackServer], str],
) -> None:
    headers = _JSON | {"Authorization": authorization(server)}

    async with http.post(server.http_url + _TWIRP + "Nope", data=b"{}", headers=headers) as response:
        assert response.status == 401
        assert response.content_type == "text/plain"

    await _assert_still_served(server, connect, http)
