"""rtcstack.testing: a LiveKit-protocol server on loopback, with fault injection, for tests."""

__all__: list[str] = []
