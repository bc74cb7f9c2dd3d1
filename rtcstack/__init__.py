"""rtcstack: a thin, typed Call facade over the LiveKit Python SDK."""

import logging

__all__: list[str] = []

logging.getLogger("rtcstack").addHandler(logging.NullHandler())
