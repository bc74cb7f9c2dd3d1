"""CallOptions and ReconnectPolicy: defaults, validation, and the backoff schedule."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from rtcstack import _options
from rtcstack._errors import ConfigError
from rtcstack._options import CallOptions, ReconnectPolicy
from rtcstack._vocab import DisconnectReason


def test_defaults() -> None:
    policy = ReconnectPolicy()
    assert (policy.max_attempts, policy.initial_delay, policy.max_delay) == (10, 0.5, 10.0)
    assert (policy.multiplier, policy.jitter, policy.timeout) == (2.0, True, 120.0)
    options = CallOptions()
    assert options.connect_timeout == 20.0
    assert options.reconnect == ReconnectPolicy()
    assert (options.token_refresh_margin, options.token_refresh_timeout) == (60.0, 10.0)
    assert options.rejoin_grace == 15.0
    assert options.media_stall_timeout == 2.0
    assert options.auto_subscribe is True
    assert options.single_peer_connection is True


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": True},
        {"max_attempts": "3"},
        {"max_attempts": 2.0},
        {"initial_delay": -0.1},
        {"initial_delay": 2.0, "max_delay": 1.0},
        {"multiplier": 0.5},
        {"timeout": 0},
        {"timeout": -1.0},
        {"max_delay": float("inf")},
        {"initial_delay": float("nan")},
        {"jitter": "yes"},
        {"max_retries": 3},
    ],
)
def test_policy_rejects(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ReconnectPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"connect_timeout": 0},
        {"connect_timeout": -5.0},
        {"token_refresh_margin": -1.0},
        {"token_refresh_timeout": 0.0},
        {"auto_subscribe": 1},
        {"reconnect": {"max_attempts": 0}},
        {"reconnect": None},
        {"unknown_option": True},
    ],
)
def test_call_options_reject(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        CallOptions(**kwargs)


def test_accepts_limits() -> None:
    policy = ReconnectPolicy(max_attempts=None, timeout=None, initial_delay=0, max_delay=0, multiplier=1)
    assert policy.max_attempts is None and policy.timeout is None
    assert CallOptions(token_refresh_margin=0, connect_timeout=1).connect_timeout == 1.0


def test_frozen() -> None:
    policy = ReconnectPolicy()
    with pytest.raises(ValidationError):
        policy.max_attempts = 3
    options = CallOptions()
    with pytest.raises(ValidationError):
        options.connect_timeout = 3.0


def test_reconnect_accepts_a_dict_and_keeps_a_subclass() -> None:
    assert CallOptions.model_validate({"reconnect": {"max_attempts": 3}}).reconnect.max_attempts == 3

    class Patient(ReconnectPolicy):
        def next_delay(self, attempt: int, elapsed: float, cause: DisconnectReason) -> float | None:
            return 30.0 if cause == "server_shutdown" else super().next_delay(attempt, elapsed, cause)

    options = CallOptions(reconnect=Patient(jitter=False))
    assert type(options.reconnect) is Patient
    assert options.reconnect.next_delay(1, 0.0, "server_shutdown") == 30.0
    assert options.reconnect.next_delay(1, 0.0, "network_error") == 0.5


def test_default_policies_are_not_shared() -> None:
    assert CallOptions().reconnect is not CallOptions().reconnect


BAD_VALUES: list[tuple[type[CallOptions | ReconnectPolicy], str, Any]] = [
    (ReconnectPolicy, "max_attempts", 0),
    (ReconnectPolicy, "initial_delay", -1.0),
    (ReconnectPolicy, "max_delay", -1.0),
    (ReconnectPolicy, "multiplier", 0.5),
    (ReconnectPolicy, "jitter", "yes"),
    (ReconnectPolicy, "timeout", 0.0),
    (CallOptions, "connect_timeout", 0.0),
    (CallOptions, "reconnect", {"max_attempts": 0}),
    (CallOptions, "token_refresh_margin", -1.0),
    (CallOptions, "token_refresh_timeout", 0.0),
    (CallOptions, "rejoin_grace", -1.0),
    (CallOptions, "media_stall_timeout", 0.0),
    (CallOptions, "auto_subscribe", 1),
    (CallOptions, "single_peer_connection", "no"),
]
"""One bad value per option field (`test_every_field_has_a_bad_value` keeps the list complete)."""

BUILDS: dict[str, Callable[[type[CallOptions | ReconnectPolicy], str, Any], object]] = {
    "constructor": lambda model, field, value: model(**{field: value}),
    "model_validate": lambda model, field, value: model.model_validate({field: value}),
    "model_validate_json": lambda model, field, value: model.model_validate_json(json.dumps({field: value})),
    "model_copy(update=)": lambda model, field, value: model().model_copy(update={field: value}),
}


def test_every_field_has_a_bad_value() -> None:
    for model in (CallOptions, ReconnectPolicy):
        assert {field for owner, field, _ in BAD_VALUES if owner is model} == set(model.model_fields)


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize(("model", "field", "value"), BAD_VALUES, ids=[f"{m.__name__}.{f}" for m, f, _ in BAD_VALUES])
def test_a_bad_value_is_a_config_error_whichever_way_built(
    build: str, model: type[CallOptions | ReconnectPolicy], field: str, value: Any
) -> None:
    with pytest.raises(ConfigError, match=rf"(?m)^{field}\b") as info:
        BUILDS[build](model, field, value)
    assert isinstance(info.value, ValueError)
    cause = info.value.__cause__
    assert isinstance(cause, ValidationError)
    assert str(info.value) == str(cause)  # pydantic's message, as it is
    assert [error["loc"][0] for error in cause.errors()] == [field]


def test_an_unknown_option_is_a_config_error_whichever_way_built() -> None:
    for build in BUILDS.values():
        with pytest.raises(ConfigError, match="reconnect_policy"):
            build(CallOptions, "reconnect_policy", None)


def test_model_copy_validates_and_keeps_what_it_does_not_update() -> None:
    options = CallOptions(connect_timeout=5.0, reconnect=ReconnectPolicy(max_attempts=3))
    copy = options.model_copy(update={"token_refresh_margin": 3.0})
    assert copy == CallOptions(connect_timeout=5.0, reconnect=ReconnectPolicy(max_attempts=3), token_refresh_margin=3.0)
    assert copy.reconnect is options.reconnect
    assert options.model_copy() == options
    with pytest.raises(ConfigError, match="max_delay must be >= initial_delay"):
        ReconnectPolicy().model_copy(update={"initial_delay": 20.0})


def test_schedule_without_jitter_is_the_cap() -> None:
    policy = ReconnectPolicy(jitter=False, initial_delay=0.5, multiplier=2.0, max_delay=3.0, max_attempts=6)
    delays = [policy.next_delay(n, 0.0, "network_error") for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, None]


def test_gives_up_at_timeout() -> None:
    policy = ReconnectPolicy(timeout=5.0, max_attempts=None, jitter=False)
    assert policy.next_delay(1000, 4.999, "network_error") == 10.0
    assert policy.next_delay(2, 5.0, "network_error") is None


def test_unlimited_attempts_never_overflow() -> None:
    policy = ReconnectPolicy(max_attempts=None, timeout=None, jitter=False, multiplier=10.0, max_delay=7.0)
    assert policy.next_delay(100_000, 1e9, "unknown") == 7.0


def test_zero_initial_delay_is_always_zero() -> None:
    policy = ReconnectPolicy(initial_delay=0.0, max_attempts=None, timeout=None, jitter=False)
    assert policy.next_delay(5000, 0.0, "network_error") == 0.0


def test_attempt_below_one_uses_initial_delay() -> None:
    assert ReconnectPolicy(jitter=False).next_delay(0, 0.0, "network_error") == 0.5


def test_jitter_is_seedable_and_full() -> None:
    policy = ReconnectPolicy()
    _options._random.seed(7)
    first = [policy.next_delay(n, 0.0, "network_error") for n in range(1, 11)]
    _options._random.seed(7)
    second = [policy.next_delay(n, 0.0, "network_error") for n in range(1, 11)]
    assert first == second
    assert len(set(first)) == len(first)


@given(
    attempt=st.integers(min_value=1, max_value=10),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jitter_stays_within_the_cap(attempt: int, seed: int) -> None:
    policy = ReconnectPolicy()
    _options._random.seed(seed)
    delay = policy.next_delay(attempt, 0.0, "network_error")
    assert delay is not None
    assert 0.0 <= delay <= min(10.0, 0.5 * 2.0 ** (attempt - 1))
