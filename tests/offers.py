"""Offers that made aiortc raise something other than ValueError (AssertionError, KeyError, AttributeError) when the
fuzz test sent them to LoopbackServer, before the server checked offers first; by a short name."""

from __future__ import annotations

MALFORMED_OFFERS = {
    "unreadable-m-line": "m=",
    "forbidden-payload-type": "m=audio 9 UDP/TLS/RTP/SAVPF 300\r\n",
    "unknown-setup": "a=setup:x\r\n",
    "no-dtls": (
        "a=ice-ufrag:abcd\r\nt=0 0\r\nc=IN IP4 0.0.0.0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"
        "a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    ),
}
