"""The command line without a network: parsing, the one-line errors, `rtcstack token`."""

from __future__ import annotations

import subprocess
import sys

import jwt
import pytest

from rtcstack._cli import main

KEY = "devkey"
SECRET = "a-development-secret-of-at-least-32-bytes"


@pytest.fixture(autouse=True)
def _no_credentials_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)


def _decode(token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(token, SECRET, algorithms=["HS256"], issuer=KEY)
    return claims


def test_token_prints_the_jwt_alone_with_the_claims(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            *("token", "--room", "demo", "--identity", "alice", "--name", "Alice", "--ttl", "600"),
            *("--api-key", KEY, "--api-secret", SECRET),
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0
    assert err == ""
    assert out.endswith("\n")
    assert out.count("\n") == 1
    claims = _decode(out.strip())
    assert claims["sub"] == "alice"
    assert claims["iss"] == KEY
    assert claims["name"] == "Alice"
    video = claims["video"]
    assert isinstance(video, dict)
    assert video["roomJoin"] is True
    assert video["room"] == "demo"
    assert isinstance(claims["exp"], int)
    assert isinstance(claims["nbf"], int)
    assert claims["exp"] - claims["nbf"] == 600


def test_token_reads_key_and_secret_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    assert main(["token", "--room", "r", "--identity", "bob"]) == 0
    claims = _decode(capsys.readouterr().out.strip())
    assert claims["sub"] == "bob"
    assert "name" not in claims
    assert isinstance(claims["exp"], int)
    assert isinstance(claims["nbf"], int)
    assert claims["exp"] - claims["nbf"] == 3600


@pytest.mark.parametrize(
    ("extra", "missing"),
    [
        ([], "missing API key and API secret"),
        (["--api-key", KEY], "missing API secret: pass --api-secret or set LIVEKIT_API_SECRET"),
        (["--api-secret", SECRET], "missing API key: pass --api-key or set LIVEKIT_API_KEY"),
    ],
)
def test_token_without_key_or_secret_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], extra: list[str], missing: str
) -> None:
    status = main(["token", "--room", "r", "--identity", "i", *extra])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"rtcstack: error: {missing}")


def test_a_short_secret_warns_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--room", "r", "--identity", "i", "--api-key", KEY, "--api-secret", "s"]) == 0
    out, err = capsys.readouterr()
    assert jwt.decode(out.strip(), options={"verify_signature": False})["sub"] == "i"
    assert err == "rtcstack: warning: the API secret is shorter than 32 bytes, weak for HS256\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND (see 'rtcstack --help')"),
        (["nope"], "argument COMMAND: invalid choice: 'nope'"),
        (["token", "--room", "r"], "the following arguments are required: --identity (see 'rtcstack token --help')"),
        (["token", "--room", "r", "--identity", "i", "--ttl", "0"], "argument --ttl: expected a positive number"),
        (["token", "--room", "r", "--identity", "i", "--ttl", "1h"], "argument --ttl: expected a whole number"),
        (["token", "--room", "", "--identity", "i", "--api-key", KEY, "--api-secret", SECRET], "must not be empty"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("rtcstack: error: ")
    assert message in err


def test_help_describes_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("token",):
        assert command in out


def test_python_dash_m_runs_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rtcstack", "token", "--room", "r", "--identity", "i"],
        capture_output=True,
        text=True,
        env={"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert _decode(done.stdout.strip())["sub"] == "i"
