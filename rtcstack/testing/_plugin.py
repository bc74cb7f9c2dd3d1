"""pytest plugin of rtcstack.testing (entry point ``pytest11``): the ``loopback_server`` fixture.

Loaded by every pytest run in an environment where rtcstack is installed, so it imports nothing heavy: aiortc comes
in only when a test requests the fixture (a missing aiortc then fails that test, not the collection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._server import LoopbackServer

try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # without pytest-asyncio, async fixtures are left to whichever plugin runs async tests
    _async_fixture = pytest.fixture  # type: ignore[assignment]  # both decorate a fixture; their overloads differ

__all__ = ["loopback_server"]


@_async_fixture
async def loopback_server() -> AsyncIterator[LoopbackServer]:
    """A started `LoopbackServer` on 127.0.0.1 (a free port, default options), closed after the test."""
    from ._server import LoopbackServer

    async with LoopbackServer(host="127.0.0.1", port=0) as server:
        yield server
