"""Wire helpers and tables of the loopback server (no sockets)."""

from __future__ import annotations

import base64
import gzip

import pytest
from livekit import rtc
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from rtcstack import _vocab
from rtcstack.testing._tables import CONNECTION_QUALITIES, DISCONNECT_REASONS, PARTICIPANT_KINDS, QUALITY_SCORES
from rtcstack.testing._wire import (
    BadRequest,
    bearer_token,
    decode_join_request,
    decode_request,
    legacy_join_request,
)


def _encode(join: pr.JoinRequest, *, gzipped: bool) -> str:
    inner = join.SerializeToString()
    wrapped = pr.WrappedJoinRequest(
        compression=pr.WrappedJoinRequest.GZIP if gzipped else pr.WrappedJoinRequest.NONE,
        join_request=gzip.compress(inner) if gzipped else inner,
    )
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode().rstrip("=")


@pytest.mark.parametrize("gzipped", [True, False])
def test_join_request_round_trip(gzipped: bool) -> None:
    join = pr.JoinRequest(metadata="m", reconnect=True, participant_sid="PA_1")
    assert decode_join_request(_encode(join, gzipped=gzipped)) == join


@pytest.mark.parametrize(
    "encoded",
    [
        "!!",
        "AAAA",
        base64.urlsafe_b64encode(pr.WrappedJoinRequest(compression=7).SerializeToString()).decode(),
        base64.urlsafe_b64encode(
            pr.WrappedJoinRequest(compression=pr.WrappedJoinRequest.GZIP, join_request=b"not gzip").SerializeToString()
        ).decode(),
        base64.urlsafe_b64encode(
            pr.WrappedJoinRequest(
                compression=pr.WrappedJoinRequest.GZIP, join_request=gzip.compress(b"x")[:-4]
            ).SerializeToString()
        ).decode(),
    ],
    ids=["alphabet", "corrupt", "compression", "gzip", "truncated"],
)
def test_bad_join_requests(encoded: str) -> None:
    with pytest.raises(BadRequest):
        decode_join_request(encoded)


def test_oversized_gzip_join_request() -> None:
    bomb = pr.WrappedJoinRequest(compression=pr.WrappedJoinRequest.GZIP, join_request=gzip.compress(b"\0" * (2 << 20)))
    with pytest.raises(BadRequest, match="too large"):
        decode_join_request(base64.urlsafe_b64encode(bomb.SerializeToString()).decode())


def test_legacy_query() -> None:
    join = legacy_join_request(
        {
            "sdk": "python",
            "protocol": "16",
            "auto_subscribe": "0",
            "reconnect": "1",
            "sid": "PA_1",
            "reconnect_reason": "1",
        }
    )
    assert join.client_info.sdk == pm.ClientInfo.PYTHON
    assert (join.client_info.protocol, join.connection_settings.auto_subscribe) == (16, False)
    assert (join.reconnect, join.participant_sid, join.reconnect_reason) == (True, "PA_1", 1)
    assert legacy_join_request({"sdk": "nope"}).client_info.sdk == pm.ClientInfo.UNKNOWN
    with pytest.raises(BadRequest):
        legacy_join_request({"protocol": "x"})


def test_bearer_token_header_then_query() -> None:
    assert bearer_token({"Authorization": "Bearer abc"}, {"access_token": "q"}) == "abc"
    assert bearer_token({"Authorization": "Basic abc"}, {"access_token": "q"}) == "q"
    assert bearer_token({}, {}) is None


def test_decode_request_binary_json_and_garbage() -> None:
    ping = pr.SignalRequest(ping_req=pr.Ping(timestamp=5))
    assert decode_request(ping.SerializeToString()) == ping
    assert decode_request('{"pingReq": {"timestamp": "5"}}') == ping
    with pytest.raises(BadRequest):
        decode_request(b"\xff\xff\xff")
    with pytest.raises(BadRequest):
        decode_request("{not json")


def test_tables_cover_our_vocabularies() -> None:
    assert set(DISCONNECT_REASONS) == set(_vocab.DISCONNECT_REASONS)
    assert set(CONNECTION_QUALITIES) | {"unknown"} == set(_vocab.QUALITIES)
    assert set(QUALITY_SCORES) == set(CONNECTION_QUALITIES)
    assert set(PARTICIPANT_KINDS) == set(_vocab.PARTICIPANT_KINDS)


def test_reasons_with_a_protocol_twin_map_onto_it() -> None:
    for ours, value in DISCONNECT_REASONS.items():
        name = pm.DisconnectReason.Name(value)
        assert rtc.DisconnectReason.Value(name) == value
        if ours.upper() in pm.DisconnectReason.DESCRIPTOR.values_by_name:
            assert name == ours.upper()
