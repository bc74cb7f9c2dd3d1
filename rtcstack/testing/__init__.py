"""rtcstack.testing: a LiveKit-protocol server on loopback, with fault injection, for tests.

`LoopbackServer`, `ReceivedTrack` (what `LoopbackServer.received` returns) and `audio_track` (a local track playing a
tone or a WAV file) are imported on first use, so that the pytest plugin (loaded in every pytest run once rtcstack is
installed) imports no aiortc until a test asks for the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._audio import audio_track
    from ._forward import ReceivedTrack
    from ._server import LoopbackServer

__all__ = ["LoopbackServer", "ReceivedTrack", "audio_track"]


def __getattr__(name: str) -> object:
    if name == "LoopbackServer":
        from ._server import LoopbackServer

        return LoopbackServer
    if name == "ReceivedTrack":
        from ._forward import ReceivedTrack

        return ReceivedTrack
    if name == "audio_track":
        from ._audio import audio_track

        return audio_track
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
