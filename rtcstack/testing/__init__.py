"""rtcstack.testing: servers to test calls against, with fault injection.

`LoopbackServer` is a LiveKit-protocol server on loopback (aiortc); `LiveKitServer` runs a real livekit-server
behind a signal proxy with the same fault surface; `LiveKitCluster` runs livekit-server nodes sharing a redis-server
behind a front that hands each connection to a live node; `audio_track` is a local track playing a tone or a WAV
file. They, and `ReceivedTrack` (what `LoopbackServer.received` returns), are imported on first use, so that the
pytest plugin (loaded in every pytest run once rtcstack is installed) imports no aiortc until a test asks for a
server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._audio import audio_track
    from ._cluster import LiveKitCluster
    from ._forward import ReceivedTrack
    from ._livekit import LiveKitServer
    from ._server import LoopbackServer

__all__ = ["LiveKitCluster", "LiveKitServer", "LoopbackServer", "ReceivedTrack", "audio_track"]


def __getattr__(name: str) -> object:
    if name == "LoopbackServer":
        from ._server import LoopbackServer

        return LoopbackServer
    if name == "LiveKitCluster":
        from ._cluster import LiveKitCluster

        return LiveKitCluster
    if name == "LiveKitServer":
        from ._livekit import LiveKitServer

        return LiveKitServer
    if name == "ReceivedTrack":
        from ._forward import ReceivedTrack

        return ReceivedTrack
    if name == "audio_track":
        from ._audio import audio_track

        return audio_track
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
