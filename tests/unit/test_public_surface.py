"""What `help()` shows of the public classes is what users may use: no internal parameter or method looks public."""

from __future__ import annotations

import inspect
import pydoc

from rtcstack import Call, MediaStream, create_call
from tests.fakes import mint

PUBLIC_CALL_ARGS = {"self", "url", "token", "token_refresher", "options"}
PUBLIC_STREAM = {"aclose", "ended", "track"}


def test_call_init_shows_no_internal_parameter_as_public() -> None:
    shown = {name for name in inspect.signature(Call.__init__).parameters if not name.startswith("_")}
    assert shown == PUBLIC_CALL_ARGS
    page = pydoc.render_doc(Call, renderer=pydoc.plaintext)
    for internal in ("claims:", "room_factory", "clock:"):
        assert f" {internal}" not in page and f"({internal}" not in page


def test_media_stream_shows_only_what_a_reader_uses() -> None:
    shown = {name for name in dir(MediaStream) if not name.startswith("_")}
    assert shown == PUBLIC_STREAM


def test_identity_and_room_name_come_from_the_token_before_connect() -> None:
    call = create_call("ws://localhost:7880", mint(identity="alice", room="standup"))
    assert (call.identity, call.room_name, call.connection_state) == ("alice", "standup", "idle")
