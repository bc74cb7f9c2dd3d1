"""A bot: joins, greets everyone who arrives over the data channel, and answers "ping" with "pong".

python examples/bot.py URL TOKEN
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from rtcstack import Participant, create_call


async def main(url: str, token: str, *, stay: float = 30.0) -> None:
    call = create_call(url, token)

    async def greet(participant: Participant) -> None:
        text = f"hello {participant.name or participant.identity}"
        await call.room.local_participant.publish_data(text, topic="chat")

    async def answer(data: bytes, sender: Participant | None, topic: str | None, reliable: bool) -> None:
        if data == b"ping" and sender is not None:
            await call.room.local_participant.publish_data(
                "pong", topic=topic or "chat", destination_identities=[sender.identity]
            )

    call.on("participant_joined", greet)
    call.on("data_received", answer)
    async with call:
        print(f"bot online with {len(call.participants)} others in the room")
        with contextlib.suppress(TimeoutError):
            await call.wait_for("disconnected", timeout=stay)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
