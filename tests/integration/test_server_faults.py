"""Fault injection of LoopbackServer, seen through the real livekit.rtc.Room."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

import pytest
from livekit import api, rtc

from rtcstack.testing import LoopbackServer
from rtcstack.testing._tables import DISCONNECT_REASONS

if TYPE_CHECKING:
    from conftest import Connect

WAIT = 15.0


async def test_drop_signal_resumes_with_a_real_ice_restart(
    server: LoopbackServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rtcstack.testing")
    alice = await connect("alice")
    sid = alice.room.local_participant.sid

    await server.drop_signal("alice")

    await alice.wait_for("reconnecting")
    await alice.wait_for("reconnected")
    assert alice.room.local_participant.sid == sid
    assert server.participants("demo") == ["alice"]
    assert "alice/publisher: ICE restart, adopting the new remote credentials" in caplog.messages


async def test_leave_with_resume_action_resumes(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")

    await server.leave("alice", reason="unknown", action="resume")

    await alice.wait_for("reconnected")
    assert "disconnected" not in alice.names()


async def test_leave_with_reconnect_action_rejoins_with_a_new_sid(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    sid = alice.room.local_participant.sid

    await server.leave("alice", reason="unknown", action="reconnect")

    await alice.wait_for("reconnected")
    new_sid = server.registry.find("alice").sid
    assert new_sid != sid
    assert server.participants("demo") == ["bob", "alice"]
    await bob.wait_for("participant_disconnected", lambda p: p.sid == sid)
    await bob.wait_for("participant_connected", lambda p: p.sid == new_sid)


async def test_client_full_reconnect_replaces_the_session(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")
    sid = alice.room.local_participant.sid

    await alice.room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT)

    await alice.wait_for("reconnected")
    assert server.registry.find("alice").sid != sid
    assert server.participants("demo") == ["alice"]


@pytest.mark.parametrize("reason", sorted(DISCONNECT_REASONS))
async def test_leave_reason_reaches_the_sdk(server: LoopbackServer, connect: Connect, reason: str) -> None:
    alice = await connect("alice")
    bob = await connect("bob")

    await server.leave("alice", reason=reason)

    (received,) = await alice.wait_for("disconnected")
    assert rtc.DisconnectReason.Name(received) == api.DisconnectReason.Name(DISCONNECT_REASONS[reason])
    await bob.wait_for("participant_disconnected", lambda p: p.identity == "alice")


async def test_delete_room_disconnects_everyone(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")
    bob = await connect("bob")

    await server.delete_room("demo")

    assert await alice.wait_for("disconnected") == (rtc.DisconnectReason.ROOM_DELETED,)
    assert await bob.wait_for("disconnected") == (rtc.DisconnectReason.ROOM_DELETED,)
    assert server.rooms() == []


async def test_refused_join_with_401_fails_at_once(server: LoopbackServer, connect: Connect) -> None:
    server.refuse_joins(count=1, status=401)

    with pytest.raises(rtc.ConnectError):
        await connect("alice")

    assert server.rooms() == []


async def test_refused_join_with_503_is_retried(server: LoopbackServer, connect: Connect) -> None:
    server.refuse_joins(count=1, status=503, identity="alice")

    alice = await connect("alice")

    assert alice.room.connection_state == rtc.ConnectionState.CONN_CONNECTED


async def test_refused_resume_falls_back_to_a_full_reconnect(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")
    sid = alice.room.local_participant.sid
    server.refuse_joins(count=1, status=503)

    await server.drop_signal("alice")

    await alice.wait_for("reconnected")
    assert server.registry.find("alice").sid != sid


@pytest.mark.parametrize(
    ("token_kwargs", "secret"),
    [({"ttl": -600}, None), ({}, "another-secret-that-is-at-least-32-bytes")],
    ids=["expired", "wrongly-signed"],
)
async def test_bad_token_is_refused(
    server: LoopbackServer, connect: Connect, token_kwargs: dict[str, float], secret: str | None
) -> None:
    token = server.token("alice", room="demo", **token_kwargs)
    if secret is not None:
        token = LoopbackServer(api_key=server.api_key, api_secret=secret).token("alice", room="demo")

    with pytest.raises(rtc.ConnectError):
        await connect("alice", token=token)

    assert server.rooms() == []


async def test_connection_quality_reaches_local_and_remote(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    await alice.wait_for("participant_connected", lambda p: p.identity == "bob")  # an update about an unknown is lost

    await server.set_connection_quality("bob", "poor")

    await bob.wait_for(
        "connection_quality_changed",
        lambda p, q: p.identity == "bob" and q == rtc.ConnectionQuality.QUALITY_POOR,
    )
    await alice.wait_for(
        "connection_quality_changed",
        lambda p, q: p.identity == "bob" and q == rtc.ConnectionQuality.QUALITY_POOR,
    )
    await server.set_connection_quality("bob", "excellent")
    await alice.wait_for("connection_quality_changed", lambda p, q: q == rtc.ConnectionQuality.QUALITY_EXCELLENT)


async def test_refresh_token_arrives_as_token_refreshed(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")
    await alice.wait_count("token_refreshed", 1)

    token = await server.refresh_token("alice", ttl=900)

    await alice.wait_count("token_refreshed", 2)
    claims = api.TokenVerifier(server.api_key, server.api_secret).verify(token)
    assert claims.identity == "alice"
    assert claims.video is not None and claims.video.room == "demo"


@pytest.mark.parametrize("server", [{"token_refresh_interval": 0.2}], indirect=True)
async def test_server_refreshes_tokens_periodically(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")

    await alice.wait_count("token_refreshed", 3)


async def test_synthetic_participants_are_announced(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")

    await server.add_participant("demo", "bot", name="Bot", kind="agent", metadata="m", attributes={"a": "1"})

    (bot,) = await alice.wait_for("participant_connected", lambda p: p.identity == "bot")
    assert bot.name == "Bot"
    assert bot.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    assert bot.attributes == {"a": "1"}
    assert server.participants("demo") == ["alice", "bot"]
    await server.remove_participant("demo", "bot")
    await alice.wait_for("participant_disconnected", lambda p: p.identity == "bot")
    assert server.participants("demo") == ["alice"]


async def test_late_joiner_sees_synthetic_participant(server: LoopbackServer, connect: Connect) -> None:
    await server.add_participant("demo", "bot")

    alice = await connect("alice")

    assert list(alice.room.remote_participants) == ["bot"]


@pytest.mark.parametrize("server", [{"ping_interval": 1, "ping_timeout": 4}], indirect=True)
async def test_paused_pings_make_the_client_resume(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")

    server.pause_pings("alice", True)
    await alice.wait_for("reconnecting")
    server.pause_pings("alice", False)

    await alice.wait_for("reconnected")


async def test_simulated_speaker_update(connect: Connect) -> None:
    """The speaker hears of its own speech (its subscribers too: see test_call_events)."""
    alice = await connect("alice")

    await alice.room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_SPEAKER)

    await alice.wait_for("active_speakers_changed", lambda speakers: [p.identity for p in speakers] == ["alice"])


async def test_simulated_server_leave_disconnects(connect: Connect) -> None:
    alice = await connect("alice")

    await alice.room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_SERVER_LEAVE)

    assert await alice.wait_for("disconnected") == (rtc.DisconnectReason.SERVER_SHUTDOWN,)


async def test_simulated_node_failure_resumes(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")
    sid = alice.room.local_participant.sid

    await alice.room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_NODE_FAILURE)

    await alice.wait_for("reconnected")
    assert server.registry.find("alice").sid == sid


async def test_simulated_signal_drop_on_resume_recovers(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")

    await alice.room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_DISCONNECT_SIGNAL_ON_RESUME)

    await alice.wait_for("reconnected")
    assert server.participants("demo") == ["alice"]


async def test_close_disconnects_clients_and_leaves_no_tasks() -> None:
    """close() tells each client the server shuts down, and every task the server made (signal handlers, socket
    writers, the periodic token refresh, peer connections) is gone when it returns: only the SDK's own remain."""
    before = asyncio.all_tasks()
    server = LoopbackServer(token_refresh_interval=60)
    await server.start()
    ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    room = rtc.Room()
    room.on("disconnected", lambda reason: ended.done() or ended.set_result(reason))
    try:
        await room.connect(
            server.url, server.token("alice", room="demo"), rtc.RoomOptions(single_peer_connection=False)
        )
        assert any("_refresh_periodically" in repr(t.get_coro()) for t in asyncio.all_tasks())

        await server.close()

        assert server.rooms() == []
        await asyncio.sleep(0)  # tasks cancelled by close() finish on their next step
        left = [t for t in asyncio.all_tasks() - before if not t.done() and not _of_the_sdk(t)]
        assert left == [], "tasks of the server outlived close()"
        try:
            reason = await asyncio.wait_for(ended, WAIT)
        except asyncio.TimeoutError:
            pytest.fail(f"the client was not disconnected within {WAIT} s of close()")
        assert reason == rtc.DisconnectReason.SERVER_SHUTDOWN
    finally:
        await room.disconnect()


def _of_the_sdk(task: asyncio.Task[object]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and f"{os.sep}livekit{os.sep}rtc{os.sep}" in code.co_filename


@pytest.mark.parametrize("server", [{"token_refresh": False}], indirect=True)
async def test_token_refresh_can_be_disabled(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")

    await server.refresh_token("alice")
    await server.set_connection_quality("alice", "good")

    await alice.wait_for("connection_quality_changed")
    assert alice.count("token_refreshed") == 1


@pytest.mark.parametrize("server", [{"departure_timeout": 1.0}], indirect=True)
async def test_a_session_that_cannot_resume_departs(server: LoopbackServer, connect: Connect) -> None:
    await connect("alice")
    bob = await connect("bob")
    server.refuse_joins(count=1000, status=503, identity="alice")  # its resumes are refused: the session stays detached

    await server.drop_signal("alice")

    await bob.wait_for("participant_disconnected", lambda p: p.identity == "alice")
    assert server.participants("demo") == ["bob"]
    server.refuse_joins(count=0)


@pytest.mark.parametrize("server", [{"departure_timeout": 1.0}], indirect=True)
async def test_a_resumed_session_does_not_depart(server: LoopbackServer, connect: Connect) -> None:
    alice = await connect("alice")
    sid = server.registry.find("alice").sid
    dropped = time.monotonic()

    await server.drop_signal("alice")

    await alice.wait_for("reconnected")
    await asyncio.sleep(max(0.0, dropped + 1.0 - time.monotonic()) + 0.5)  # its departure was due by now
    assert server.registry.find("alice").sid == sid, "the session departed (the client joined again)"
    assert alice.count("reconnecting") == 1 and alice.count("disconnected") == 0
