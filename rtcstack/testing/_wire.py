"""Wire helpers with no I/O: join request decoding, frame codec, the bearer token of a request."""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

__all__ = [
    "BadRequest",
    "bearer_token",
    "decode_join_request",
    "decode_request",
    "encode_response",
    "legacy_join_request",
]

_MAX_JOIN_REQUEST = 1 << 20


class BadRequest(ValueError):
    """A join request or signal frame that does not decode (the real server answers 400 / closes)."""


def bearer_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The JWT of an upgrade or validate request: ``Authorization: Bearer`` first, ``access_token`` query second."""
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return query.get("access_token") or None


def decode_join_request(encoded: str) -> pr.JoinRequest:
    """Decode ``/rtc/v1``'s ``join_request``: urlsafe base64 of a WrappedJoinRequest, the inner request maybe gzip."""
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
        wrapped = pr.WrappedJoinRequest.FromString(raw)
        inner = wrapped.join_request
        if wrapped.compression == pr.WrappedJoinRequest.GZIP:
            inner = _gunzip(inner)
        elif wrapped.compression != pr.WrappedJoinRequest.NONE:
            raise BadRequest(f"unknown compression {wrapped.compression}")
        return pr.JoinRequest.FromString(inner)
    except (binascii.Error, DecodeError, zlib.error) as exc:
        raise BadRequest(f"undecodable join_request: {exc}") from exc


def _gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    out = inflater.decompress(data, _MAX_JOIN_REQUEST)
    if inflater.unconsumed_tail:
        raise BadRequest("join_request too large")
    if not inflater.eof:
        raise BadRequest("truncated gzip join_request")
    return out


def legacy_join_request(query: Mapping[str, str]) -> pr.JoinRequest:
    """Build a JoinRequest from legacy ``/rtc`` query parameters (sdk, protocol, auto_subscribe, reconnect, sid...)."""
    try:
        protocol = int(query.get("protocol", "0") or 0)
        reason = pm.ReconnectReason.Name(int(query.get("reconnect_reason", "0") or 0))
    except ValueError as exc:
        raise BadRequest(f"bad query parameter: {exc}") from exc
    sdk_name = query.get("sdk", "").upper()
    sdk = sdk_name if sdk_name in pm.ClientInfo.SDK.DESCRIPTOR.values_by_name else "UNKNOWN"
    return pr.JoinRequest(
        client_info=pm.ClientInfo(sdk=sdk, protocol=protocol, version=query.get("version", "")),
        connection_settings=pr.ConnectionSettings(auto_subscribe=_flag(query.get("auto_subscribe", "1"))),
        reconnect=_flag(query.get("reconnect", "0")),
        reconnect_reason=reason,
        participant_sid=query.get("sid", ""),
    )


def _flag(value: str) -> bool:
    return value.lower() in ("1", "true")


def decode_request(frame: bytes | str) -> pr.SignalRequest:
    """Decode one signal frame: binary protobuf, or protobuf JSON in a text frame (as the real server accepts)."""
    try:
        if isinstance(frame, str):
            return json_format.Parse(frame, pr.SignalRequest())
        return pr.SignalRequest.FromString(frame)
    except (DecodeError, json_format.ParseError) as exc:
        raise BadRequest(f"undecodable signal frame: {exc}") from exc


def encode_response(message: pr.SignalResponse) -> bytes:
    """Encode one signal response frame."""
    return message.SerializeToString()
