"""LoopbackServer answers browsers from any origin as livekit-server does: CORS headers and preflights."""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit import api
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from rtcstack.testing import LoopbackServer

ORIGIN = "http://app.example"
ROOM_SERVICE = "/twirp/livekit.RoomService/ListRooms"


@pytest.fixture
async def http(server: LoopbackServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.http_url) as session:
        yield session


@pytest.mark.parametrize("path", ["/rtc/validate", "/rtc/v1/validate"])
async def test_a_refused_validate_is_readable_from_another_origin(http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(path, headers={"Origin": ORIGIN, "Authorization": "Bearer nonsense"}) as response:
        assert response.status == 401
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert response.headers["Access-Control-Expose-Headers"] == "*"
        assert "Origin" in response.headers.getall("Vary")


async def test_a_valid_validate_is_readable_from_another_origin(
    server: LoopbackServer, http: aiohttp.ClientSession
) -> None:
    token = server.token("alice", room="demo")
    async with http.get("/rtc/v1/validate", headers={"Origin": ORIGIN, "Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.parametrize("path", ["/rtc/validate", "/rtc/v1/validate", ROOM_SERVICE])
async def test_preflight_allows_the_method_and_headers_asked_for(http: aiohttp.ClientSession, path: str) -> None:
    asked = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with http.options(path, headers=asked) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert response.headers["Access-Control-Allow-Methods"] == "POST"
        assert response.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        assert response.headers["Access-Control-Max-Age"] == "86400"


async def test_preflight_of_a_method_livekit_does_not_allow_gets_no_grant(http: aiohttp.ClientSession) -> None:
    asked = {"Origin": ORIGIN, "Access-Control-Request-Method": "PUT"}
    async with http.options(ROOM_SERVICE, headers=asked) as response:
        assert response.status == 204
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_twirp_answers_carry_cors_headers(server: LoopbackServer, http: aiohttp.ClientSession) -> None:
    refused = {"Origin": ORIGIN, "Content-Type": "application/json", "Authorization": "Bearer nonsense"}
    async with http.post(ROOM_SERVICE, data="{}", headers=refused) as response:
        assert response.status == 401
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN

    token = api.AccessToken(server.api_key, server.api_secret).with_grants(api.VideoGrants(room_list=True)).to_jwt()
    allowed = {"Origin": ORIGIN, "Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    async with http.post(ROOM_SERVICE, data="{}", headers=allowed) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert await response.json() == {"rooms": []}


async def test_no_origin_no_cors_headers(http: aiohttp.ClientSession) -> None:
    async with http.get("/rtc/validate") as response:
        assert response.status == 401
        assert "Access-Control-Allow-Origin" not in response.headers


def _join_request() -> str:
    inner = pr.JoinRequest(client_info=pm.ClientInfo(sdk=pm.ClientInfo.PYTHON, protocol=16))
    wrapped = pr.WrappedJoinRequest(
        compression=pr.WrappedJoinRequest.GZIP, join_request=gzip.compress(inner.SerializeToString())
    )
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()


UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
}


@pytest.mark.parametrize("path", ["/rtc", "/rtc/v1"])
async def test_the_signal_endpoints_answer_another_origin(
    server: LoopbackServer, http: aiohttp.ClientSession, path: str
) -> None:
    """Refused (not an upgrade, bad token) or upgraded, a signal answer carries the CORS headers."""
    params = {"join_request": _join_request()} if path == "/rtc/v1" else {}
    async with http.get(path, params=params, headers={"Origin": ORIGIN}) as response:
        assert response.status == 404
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    refused = {**UPGRADE, "Origin": ORIGIN, "Authorization": "Bearer nonsense"}
    async with http.get(path, params=params, headers=refused) as response:
        assert response.status == 401
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert response.headers["Access-Control-Expose-Headers"] == "*"
    allowed = {**UPGRADE, "Origin": ORIGIN, "Authorization": f"Bearer {server.token('alice', room='demo')}"}
    async with http.get(path, params=params, headers=allowed) as response:
        assert response.status == 101
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
