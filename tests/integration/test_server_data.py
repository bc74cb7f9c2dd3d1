"""LoopbackServer's data plane between real ``livekit.rtc.Room`` clients: every packet kind, as LiveKit relays it."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from livekit import rtc
from livekit.protocol import rtc as pr

from rtcstack.testing import LoopbackServer

if TYPE_CHECKING:
    from conftest import Client, Connect

WAIT = 15.0
LEGACY = rtc.RoomOptions(single_peer_connection=False)


def record(client: Client) -> None:
    """Record what the data plane delivers to ``client``: data, DTMF and transcriptions."""
    client.room.on("data_received", lambda packet: client.record("data_received", packet))
    client.room.on("sip_dtmf_received", lambda dtmf: client.record("sip_dtmf_received", dtmf))
    client.room.on("transcription_received", lambda *args: client.record("transcription_received", *args))


def payloads(client: Client) -> list[bytes]:
    return [args[0].data for name, args in client.events if name == "data_received"]


async def test_rpc_round_trip(connect: Connect) -> None:
    alice = await connect("alice")
    bob = await connect("bob")

    async def greet(data: rtc.RpcInvocationData) -> str:
        return f"hello {data.caller_identity}, you said {data.payload}"

    bob.room.local_participant.register_rpc_method("greet", greet)

    reply = await alice.room.local_participant.perform_rpc(
        destination_identity="bob", method="greet", payload="hi", response_timeout=WAIT
    )

    assert reply == "hello alice, you said hi"


async def test_rpc_errors_reach_the_caller(connect: Connect) -> None:
    alice = await connect("alice")
    bob = await connect("bob", options=LEGACY)

    async def refuse(data: rtc.RpcInvocationData) -> str:
        raise rtc.RpcError(code=4001, message="not today", data=data.payload)

    bob.room.local_participant.register_rpc_method("refuse", refuse)

    with pytest.raises(rtc.RpcError) as refused:
        await alice.room.local_participant.perform_rpc(
            destination_identity="bob", method="refuse", payload="please", response_timeout=WAIT
        )
    assert (refused.value.code, refused.value.message, refused.value.data) == (4001, "not today", "please")

    with pytest.raises(rtc.RpcError) as unknown:
        await alice.room.local_participant.perform_rpc(
            destination_identity="bob", method="nothing-here", payload="", response_timeout=WAIT
        )
    assert unknown.value.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD


async def test_text_stream_arrives_whole_and_only_where_sent(connect: Connect) -> None:
    alice = await connect("alice")
    bob = await connect("bob", options=LEGACY)
    carol = await connect("carol")
    received: dict[str, asyncio.Queue[tuple[str, str, str]]] = {"bob": asyncio.Queue(), "carol": asyncio.Queue()}

    async def read(reader: rtc.TextStreamReader, sender: str, into: asyncio.Queue[tuple[str, str, str]]) -> None:
        await into.put((sender, reader.info.topic, await reader.read_all()))

    for client in (bob, carol):
        client.room.register_text_stream_handler(
            "chat",
            lambda reader, sender, into=received[client.identity]: asyncio.ensure_future(read(reader, sender, into)),
        )
    text = "ünïcode and a long line " * 2000

    await alice.room.local_participant.send_text(text, topic="chat", destination_identities=["bob"])
    writer = await alice.room.local_participant.stream_text(topic="chat")
    await writer.write("for everyone")
    await writer.aclose()

    assert await asyncio.wait_for(received["bob"].get(), WAIT) == ("alice", "chat", text)
    assert await asyncio.wait_for(received["bob"].get(), WAIT) == ("alice", "chat", "for everyone")
    # one sender, one ordered channel: had carol been sent the first stream, it would have come first
    assert await asyncio.wait_for(received["carol"].get(), WAIT) == ("alice", "chat", "for everyone")


async def test_file_and_byte_stream_arrive_intact(connect: Connect, tmp_path: Path) -> None:
    alice = await connect("alice", options=LEGACY)
    bob = await connect("bob")
    content = bytes(range(256)) * 1200
    path = tmp_path / "sample.bin"
    path.write_bytes(content)
    streams: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()

    async def read(reader: rtc.ByteStreamReader, sender: str) -> None:
        chunks = [chunk async for chunk in reader]
        await streams.put((sender, reader.info.name, b"".join(chunks)))

    bob.room.register_byte_stream_handler("files", lambda reader, sender: asyncio.ensure_future(read(reader, sender)))

    await alice.room.local_participant.send_file(str(path), topic="files")
    writer = await alice.room.local_participant.stream_bytes("parts.bin", topic="files")
    for part in (b"one,", b"two,", b"three"):
        await writer.write(part)
    await writer.aclose()

    assert await asyncio.wait_for(streams.get(), WAIT) == ("alice", "sample.bin", content)
    assert await asyncio.wait_for(streams.get(), WAIT) == ("alice", "parts.bin", b"one,two,three")


@pytest.mark.parametrize("options", [None, LEGACY], ids=["single-pc", "legacy"])
async def test_kind_is_the_channel_the_packet_came_in_on(connect: Connect, options: rtc.RoomOptions | None) -> None:
    alice = await connect("alice", options=options)
    bob = await connect("bob", options=options)
    record(bob)

    await alice.room.local_participant.publish_data(b"reliable", reliable=True)
    reliable = await bob.wait_for("data_received", lambda packet: packet.data == b"reliable", timeout=WAIT)
    for _ in range(3):  # lossy may lose one; any of three is enough
        await alice.room.local_participant.publish_data(b"lossy", reliable=False)
    lossy = await bob.wait_for("data_received", lambda packet: packet.data == b"lossy", timeout=WAIT)

    assert (reliable[0].kind, reliable[0].participant.identity) == (rtc.DataPacketKind.KIND_RELIABLE, "alice")
    assert (lossy[0].kind, lossy[0].participant.identity) == (rtc.DataPacketKind.KIND_LOSSY, "alice")


async def test_destination_identities_are_honoured(connect: Connect) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    carol = await connect("carol", options=LEGACY)
    record(bob)
    record(carol)

    await alice.room.local_participant.publish_data(b"for bob", destination_identities=["bob"])
    await alice.room.local_participant.publish_data(b"for carol", destination_identities=["carol"])
    await alice.room.local_participant.publish_data(b"for all")
    await bob.wait_for("data_received", lambda packet: packet.data == b"for all")
    await carol.wait_for("data_received", lambda packet: packet.data == b"for all")

    # one sender, one ordered channel: whatever was meant for them arrived before "for all"
    assert payloads(bob) == [b"for bob", b"for all"]
    assert payloads(carol) == [b"for carol", b"for all"]


async def test_sip_dtmf_is_relayed(connect: Connect) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    record(bob)

    await alice.room.local_participant.publish_dtmf(code=5, digit="5")

    (dtmf,) = await bob.wait_for("sip_dtmf_received")
    assert (dtmf.code, dtmf.digit, dtmf.participant.identity) == (5, "5", "alice")


async def test_transcriptions_are_relayed_from_agents_only(server: LoopbackServer, connect: Connect) -> None:
    agent = await connect("agent", token=server.token("agent", room="demo", kind="agent"))
    alice = await connect("alice")
    bob = await connect("bob")
    record(bob)

    def transcription(identity: str, text: str) -> rtc.Transcription:
        segment = rtc.TranscriptionSegment(id=text, text=text, start_time=0, end_time=1, language="en", final=True)
        return rtc.Transcription(participant_identity=identity, track_sid="TR_notpublished", segments=[segment])

    await alice.room.local_participant.publish_transcription(transcription("alice", "from a user"))
    await alice.room.local_participant.publish_data(b"after the user's transcription")
    await agent.room.local_participant.publish_transcription(transcription("alice", "from the agent"))

    segments, participant, _ = await bob.wait_for("transcription_received")
    await bob.wait_for("data_received")
    assert ([s.text for s in segments], participant.identity) == (["from the agent"], "alice")
    assert bob.count("transcription_received") == 1


async def test_a_resume_tells_the_client_the_last_reliable_sequence_received(
    server: LoopbackServer, connect: Connect
) -> None:
    """The SDK resends its unacknowledged reliable packets after the sequence the ReconnectResponse names."""
    alice = await connect("alice")
    bob = await connect("bob")
    record(bob)
    for n in range(3):
        await alice.room.local_participant.publish_data(f"packet {n}".encode())
    await bob.wait_for("data_received", lambda packet: packet.data == b"packet 2")
    # a raw resume of alice's session (it takes the session's signal over from her SDK)
    inner = pr.JoinRequest(reconnect=True, participant_sid=alice.room.local_participant.sid)
    wrapped = pr.WrappedJoinRequest(join_request=inner.SerializeToString())
    query = {"join_request": base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()}

    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{server.url}/rtc/v1",
            params=query,
            headers={"Authorization": f"Bearer {server.token('alice', room='demo')}"},
        ) as ws,
    ):
        reconnect = pr.SignalResponse.FromString(await asyncio.wait_for(ws.receive_bytes(), WAIT)).reconnect

    assert reconnect.last_message_seq == 3
