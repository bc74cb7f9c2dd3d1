"""LiveKit's server API (Twirp RoomService) on the loopback server: ``POST /twirp/livekit.RoomService/<Method>``.

Bodies are binary protobuf (``application/protobuf``, what livekit-api sends) or protobuf JSON (``application/json``);
the answer uses the request's encoding, errors are Twirp JSON ``{"code", "msg"[, "meta"]}``. Checks run in the real
server's order, with its statuses: a bad token is refused by the auth middleware (401, plain text); then the route
and content type (``bad_route`` 404), the body (``malformed`` 400), the grants (``unauthenticated`` 401 "permissions
denied": LiveKit answers wrong grants with 401, not 403), and the room or participant (``not_found`` 404).
The effects go through `RoomRegistry`, so clients see what the real server sends them: leave(PARTICIPANT_REMOVED),
leave(ROOM_DELETED), ParticipantUpdates, and SendData's DataPacket on their data channel.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

import jwt
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol import models as pm
from livekit.protocol import room as proom
from livekit.protocol import rtc as pr

from ._rooms import Participant, RoomRegistry

__all__ = ["RoomService"]

logger = logging.getLogger("rtcstack.testing")

_SERVICE = proom.DESCRIPTOR.services_by_name["RoomService"]
_PREFIX: Final = f"/twirp/{_SERVICE.full_name}/"

_STATUS: Final[dict[str, int]] = {
    "bad_route": 404,
    "malformed": 400,
    "invalid_argument": 400,
    "unauthenticated": 401,
    "not_found": 404,
    "unimplemented": 501,
}
"""HTTP status of each Twirp error code this service answers with (the Twirp spec's table)."""

_JSON: Final = "application/json"
_PROTOBUF: Final = "application/protobuf"

Permission = Literal["list", "create", "admin"]
Req = TypeVar("Req", bound=Message)


class TwirpError(Exception):
    """A Twirp error answer: ``code`` (Twirp's vocabulary), ``msg``, optional ``meta``."""

    def __init__(self, code: str, msg: str, meta: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.meta = meta or {}

    def response(self) -> web.Response:
        body: dict[str, object] = {"code": self.code, "msg": self.msg}
        if self.meta:
            body["meta"] = self.meta
        return web.json_response(body, status=_STATUS[self.code])


@dataclass(frozen=True)
class _Method(Generic[Req]):
    request: type[Req]
    permission: Permission
    handle: Callable[[Req], Message]


class RoomService:
    """The RoomService methods ListRooms, ListParticipants, GetParticipant, RemoveParticipant, DeleteRoom,
    UpdateParticipant and SendData over ``registry``, authorised by API tokens signed with ``api_secret``.

    The other RoomService methods answer ``unimplemented`` (501).
    """

    def __init__(self, registry: RoomRegistry, api_key: str, api_secret: str) -> None:
        self._registry = registry
        self._verifier = api.TokenVerifier(api_key, api_secret)
        self._methods: dict[str, _Method[Any]] = {
            "ListRooms": _Method(proom.ListRoomsRequest, "list", self._list_rooms),
            "DeleteRoom": _Method(proom.DeleteRoomRequest, "create", self._delete_room),
            "ListParticipants": _Method(proom.ListParticipantsRequest, "admin", self._list_participants),
            "GetParticipant": _Method(proom.RoomParticipantIdentity, "admin", self._get_participant),
            "RemoveParticipant": _Method(proom.RoomParticipantIdentity, "admin", self._remove_participant),
            "UpdateParticipant": _Method(proom.UpdateParticipantRequest, "admin", self._update_participant),
            "SendData": _Method(proom.SendDataRequest, "admin", self._send_data),
        }

    def __repr__(self) -> str:
        return f"<RoomService {_PREFIX}>"

    def add_routes(self, app: web.Application) -> None:
        """Serve ``/twirp/livekit.RoomService/<Method>`` on ``app`` (every HTTP method: Twirp answers non-POST)."""
        app.router.add_route("*", _PREFIX + "{method}", self._serve)

    # -- HTTP ---------------------------------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        if auth is not None and not auth.startswith("Bearer "):
            return web.Response(status=401, text="invalid authorization header. Must start with Bearer ")
        token = auth[len("Bearer ") :] if auth is not None else request.query.get("access_token", "")
        claims = self._verify(token) if token else None
        if token and claims is None:
            return web.Response(status=401, text="invalid authorization token")
        try:
            method = self._route(request)
            message, encoding = await self._decode(request, method.request)
            self._authorise(claims, method.permission, message)
            reply = method.handle(message)
        except TwirpError as exc:
            logger.debug("Twirp %s: %s", request.path, exc)
            return exc.response()
        if encoding == _JSON:
            text = json_format.MessageToJson(
                reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=None
            )
            return web.Response(text=text, content_type=_JSON)
        return web.Response(body=reply.SerializeToString(), content_type=_PROTOBUF)

    def _verify(self, token: str) -> Claims | None:
        try:
            return self._verifier.verify(token)
        except (jwt.PyJWTError, ValueError, TypeError, AttributeError) as exc:
            logger.info("refused a Twirp token: %s", type(exc).__name__)
            return None

    def _route(self, request: web.Request) -> _Method[Any]:
        invalid_route = {"twirp_invalid_route": f"{request.method} {request.path}"}
        if request.method != "POST":
            raise TwirpError(
                "bad_route", f'unsupported method "{request.method}" (only POST is allowed)', invalid_route
            )
        name = request.match_info["method"]
        method = self._methods.get(name)
        if method is not None:
            return method
        if name in _SERVICE.methods_by_name:
            raise TwirpError("unimplemented", f"{name} is not supported by the loopback server")
        raise TwirpError("bad_route", f'no handler for path "{request.path}"', invalid_route)

    async def _decode(self, request: web.Request, kind: type[Req]) -> tuple[Req, str]:
        encoding = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if encoding not in (_JSON, _PROTOBUF):
            raise TwirpError(
                "bad_route",
                f'unexpected Content-Type: "{request.headers.get("Content-Type", "")}"',
                {"twirp_invalid_route": f"{request.method} {request.path}"},
            )
        body = await request.read()
        message = kind()
        try:
            if encoding == _JSON:
                fields = json.loads(body)
                if not isinstance(fields, dict):
                    raise ValueError("not a JSON object")
                json_format.ParseDict(fields, message, ignore_unknown_fields=True)
            else:
                message.ParseFromString(body)
        except (ValueError, json_format.ParseError) as exc:
            raise TwirpError("malformed", "the json request could not be decoded") from exc
        except DecodeError as exc:
            raise TwirpError("malformed", "the protobuf request could not be decoded") from exc
        return message, encoding

    @staticmethod
    def _authorise(claims: Claims | None, permission: Permission, message: Message) -> None:
        video = claims.video if claims is not None else None
        if video is None:
            allowed = False
        elif permission == "list":
            allowed = bool(video.room_list)
        elif permission == "create":
            allowed = bool(video.room_create)
        else:
            allowed = bool(video.room_admin) and video.room == getattr(message, "room", None)
        if not allowed:
            raise TwirpError("unauthenticated", "permissions denied")

    # -- methods ------------------------------------------------------------------------------------------------

    def _list_rooms(self, request: proom.ListRoomsRequest) -> proom.ListRoomsResponse:
        names = set(request.names)
        rooms = [r.snapshot() for r in self._registry.rooms() if not names or r.name in names]
        return proom.ListRoomsResponse(rooms=rooms)

    def _delete_room(self, request: proom.DeleteRoomRequest) -> proom.DeleteRoomResponse:
        if not self._registry.delete_room(request.room, pm.ROOM_DELETED):
            raise TwirpError("not_found", "requested room does not exist")
        return proom.DeleteRoomResponse()

    def _list_participants(self, request: proom.ListParticipantsRequest) -> proom.ListParticipantsResponse:
        room = self._registry.room(request.room)
        participants = [p.info for p in room.participants.values()] if room is not None else []
        return proom.ListParticipantsResponse(participants=participants)

    def _get_participant(self, request: proom.RoomParticipantIdentity) -> pm.ParticipantInfo:
        return self._participant(request.room, request.identity).info

    def _remove_participant(self, request: proom.RoomParticipantIdentity) -> proom.RemoveParticipantResponse:
        participant = self._participant(request.room, request.identity)
        self._registry.kick(
            participant, pr.LeaveRequest(reason=pm.PARTICIPANT_REMOVED, action=pr.LeaveRequest.DISCONNECT)
        )
        return proom.RemoveParticipantResponse()

    def _update_participant(self, request: proom.UpdateParticipantRequest) -> pm.ParticipantInfo:
        participant = self._participant(request.room, request.identity)
        self._registry.update(
            participant,
            name=request.name or None,
            metadata=request.metadata or None,
            attributes=dict(request.attributes) or None,
            permission=request.permission if request.HasField("permission") else None,
        )
        return participant.info

    def _send_data(self, request: proom.SendDataRequest) -> proom.SendDataResponse:
        if len(request.nonce) not in (0, 16):
            raise TwirpError(
                "invalid_argument", f"nonce should be 16-bytes or not present, got: {len(request.nonce)} bytes"
            )
        room = self._registry.room(request.room)
        if room is None:
            raise TwirpError("not_found", "requested room does not exist")
        identities = list(request.destination_identities)
        packet = pm.DataPacket(
            kind=request.kind,
            destination_identities=identities,
            user=pm.UserPacket(
                payload=request.data,
                destination_sids=request.destination_sids,
                destination_identities=identities,
                topic=request.topic if request.HasField("topic") else None,
                nonce=request.nonce,
            ),
        )
        self._registry.send_data(request.room, packet)
        return proom.SendDataResponse()

    def _participant(self, room: str, identity: str) -> Participant:
        participant = self._registry.participant(room, identity)
        if participant is None:
            raise TwirpError("not_found", "participant does not exist")
        return participant
