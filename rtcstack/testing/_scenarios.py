"""The server's part of ``Room.simulate_scenario``, as LiveKit plays it, for one session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from ._rooms import Participant, RoomRegistry
from ._router import subscriber_of

__all__ = ["Scenarios"]

logger = logging.getLogger("rtcstack.testing")

_DROPS_ON_RESUME = ("disconnect_signal_on_resume", "disconnect_signal_on_resume_no_messages")


class Scenarios:
    """Plays the scenarios ``participant``'s client asks for (``drop_signal`` aborts its socket);
    ``drop_on_resume`` is the one its next resume plays."""

    def __init__(self, participant: Participant, registry: RoomRegistry, drop_signal: Callable[[], None]) -> None:
        self._participant = participant
        self._registry = registry
        self._drop_signal = drop_signal
        self._timers: list[asyncio.TimerHandle] = []
        self.drop_on_resume: str | None = None

    def play(self, scenario: pr.SimulateScenario) -> None:
        which = scenario.WhichOneof("scenario")
        logger.debug("%s: simulating %s", self._participant.identity, which)
        if which == "speaker_update":
            self._speak(True)
            self._timers.append(asyncio.get_running_loop().call_later(scenario.speaker_update, self._speak, False))
        elif which in ("node_failure", "migration"):
            self._drop_signal()
        elif which == "server_leave":
            leave = pr.LeaveRequest(reason=pm.SERVER_SHUTDOWN, action=pr.LeaveRequest.DISCONNECT)
            self._registry.kick(self._participant, leave)
        elif which in _DROPS_ON_RESUME:
            self.drop_on_resume = which
        elif which == "leave_request_full_reconnect":
            leave = pr.LeaveRequest(reason=pm.UNKNOWN_REASON, action=pr.LeaveRequest.RECONNECT, can_reconnect=True)
            self._registry.kick(self._participant, leave)

    def _speak(self, active: bool) -> None:
        """As LiveKit: a speaker update goes to the speaker and to those subscribed to one of its tracks."""
        me = self._participant
        speaker = pm.SpeakerInfo(sid=me.sid, level=0.9 if active else 0.0, active=active)
        message = pr.SignalResponse(speakers_changed=pr.SpeakersChanged(speakers=[speaker]))
        room = self._registry.room(me.room)
        tracks = {track.sid for track in me.info.tracks}
        for other in list(room.participants.values()) if room is not None else []:
            downlink = subscriber_of(other)
            if other is me or (downlink is not None and downlink.receives(tracks)):
                other.send(message)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
