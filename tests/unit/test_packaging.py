"""What `pip install -e ".[testing]"` brings: everything `rtcstack.testing` and its pytest plugin need."""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement


def _extra(name: str) -> set[str]:
    requirements = [Requirement(line) for line in metadata.requires("rtcstack") or []]
    return {r.name for r in requirements if r.marker is not None and r.marker.evaluate({"extra": name})}


def test_the_testing_extra_brings_the_server_and_what_runs_its_async_fixture() -> None:
    assert {"aiortc", "aiohttp", "livekit-protocol", "pytest-asyncio"} <= _extra("testing")
