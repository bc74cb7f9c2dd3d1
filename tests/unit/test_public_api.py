"""The top-level exports are the public contract: sorted, complete, importable."""

from __future__ import annotations

import logging

import rtcstack


def test_all_is_sorted_and_importable() -> None:
    assert rtcstack.__all__ == sorted(rtcstack.__all__)
    for name in rtcstack.__all__:
        assert getattr(rtcstack, name) is not None


def test_public_contract_names() -> None:
    expected = {"create_call", "Call", "CallOptions", "ReconnectPolicy", "http_token_refresher", "RtcstackError"}
    assert expected <= set(rtcstack.__all__)


def test_errors_share_one_root() -> None:
    errors = [getattr(rtcstack, n) for n in rtcstack.__all__ if n.endswith("Error")]
    assert all(issubclass(e, rtcstack.RtcstackError) for e in errors)


def test_library_logger_has_a_null_handler() -> None:
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("rtcstack").handlers)
