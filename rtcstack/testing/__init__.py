"""rtcstack.testing: a LiveKit-protocol server on loopback, with fault injection, for tests."""

from ._server import LoopbackServer

__all__ = ["LoopbackServer"]
