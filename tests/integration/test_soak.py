"""A 60-second fault soak (bench/soak.py; `scripts/soak --seconds 1800` is the long one): five calls under random
signal drops, transient leaves, refused joins, quality and roster churn and short-lived tokens keep their
invariants, recover from every transient fault within the policy's bound, and agree with the server's roster."""

from __future__ import annotations

import pytest

from bench import soak
from rtcstack.testing import LoopbackServer

SERVER = {"token_refresh": False, "departure_timeout": 20.0}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("server", [SERVER], indirect=True)
async def test_sixty_seconds_of_faults(server: LoopbackServer) -> None:
    report = await soak.soak(server, calls=5, seconds=60, seed=11)
    assert report.violations == [], soak.render(report)
    transient = sum(report.faults[kind] for kind in soak.RECOVERABLE)
    assert transient >= 5 and report.recoveries == transient, soak.render(report)
    assert report.roster_checks >= 3 and report.token_refreshes >= 5, soak.render(report)
    assert report.worst_recovery <= soak.recovery_bound(soak.POLICY, soak.CONNECT_TIMEOUT)
    assert report.unprovoked_episodes == 0, soak.render(report)
    assert all(report.faults[kind] >= 1 for kind in soak.WEIGHTS), soak.render(report)  # refused resumes included
