"""``fakeedge token`` and ``fakeedge keys``: the toolkit from the command line, for non-Python stacks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from click.testing import CliRunner

from fakeedge.cli import main
from fakeedge.config import default_aud
from fakeedge.keys import KeyStore

from .conftest import BOT_ID, base_config, copy_test_key


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    cfg = base_config("http://127.0.0.1:9")
    cfg["listen"] = "127.0.0.1:8787"
    cfg["keys_dir"] = "keys"
    copy_test_key(tmp_path / "keys")
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def decode(token: str, keys_dir: Path, **kwargs: Any) -> dict[str, Any]:
    """What an origin does, with the certs document the edge would serve from ``keys_dir``."""
    certs = json.loads(KeyStore(keys_dir, time.time()).certs_document(time.time()))
    key = {k.key_id: k for k in jwt.PyJWKSet.from_dict(certs).keys}[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["RS256"], **kwargs)
    return claims


def test_token_prints_a_valid_user_token(config_file: Path) -> None:
    result = run("token", "--config", str(config_file), "--email", "alice@acme.test", "--app", "Admin")
    assert result.exit_code == 0, result.output
    claims = decode(
        result.output.strip(),
        config_file.parent / "keys",
        audience=default_aud("acme", "Admin"),
        issuer="http://127.0.0.1:8787",  # where `fakeedge serve` listens, as no team_domain is set
    )
    assert (claims["email"], claims["country"]) == ("alice@acme.test", "GB")


def test_token_variant_flags_and_claims(config_file: Path) -> None:
    result = run(
        "token", "--config", str(config_file), "--service-token", "ci-deploy-bot", "--app", "Sentry",
        "--expired", "--claim", "extra=[1, 2]", "--claim", "note=plain text", "--claim", "sub=",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with pytest.raises(jwt.ExpiredSignatureError):
        decode(result.output.strip(), config_file.parent / "keys", audience=default_aud("acme", "Sentry"))
    claims = decode(
        result.output.strip(), config_file.parent / "keys", options={"verify_exp": False, "verify_aud": False}
    )
    assert claims["common_name"] == BOT_ID
    assert claims["extra"] == [1, 2]
    assert claims["note"] == "plain text"
    assert "sub" not in claims


def test_token_mistakes(config_file: Path) -> None:
    result = run(
        "token", "--config", str(config_file), "--email", "a@acme.test", "--app", "Admin", "--expired", "--no-kid"
    )
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "Error: give one variant flag at most, got --expired --no-kid"

    result = run("token", "--config", str(config_file), "--app", "Admin")
    assert result.output.splitlines()[-1] == (
        "Error: give --email (a user token) or --service-token (a service-token token)"
    )

    result = run("token", "--config", str(config_file), "--email", "a@acme.test", "--app", "Admn")
    assert result.exit_code == 1
    assert result.output == "fakeedge: error: no app named 'Admn'; did you mean 'Admin'? apps: Admin, Sentry, Grafana\n"

    result = run("token", "--config", str(config_file), "--email", "a@acme.test", "--app", "Admin", "--claim", "x")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "Error: Invalid value for --claim: expected NAME=VALUE, got 'x'"


def test_token_needs_a_known_team_domain(tmp_path: Path) -> None:
    cfg = base_config("http://127.0.0.1:9")
    cfg["listen"] = "127.0.0.1:0"
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump(cfg))
    result = run("token", "--config", str(path), "--email", "a@acme.test", "--app", "Admin")
    assert result.exit_code == 1
    assert result.output == (
        f"fakeedge: error: {path}: the team domain (the tokens' iss) is only known once the edge runs "
        "(listen port 0); set team_domain, or ask the running edge: POST /cdn-cgi/fakeedge/token\n"
    )


def test_keys_show_and_rotate(config_file: Path) -> None:
    keys_dir = config_file.parent / "keys"
    shown = run("keys", "show", "--config", str(config_file))
    assert shown.exit_code == 0, shown.output
    kid = KeyStore(keys_dir, time.time()).current.kid
    assert shown.output == f"keys_dir {keys_dir}\ncurrent  {kid}\n"

    rotated = CliRunner().invoke(main, ["keys", "rotate", "--config", str(config_file), "--grace", "1h"])
    assert rotated.exit_code == 0, rotated.output
    lines = rotated.stdout.splitlines()
    new_kid = lines[0].removeprefix("current  ")
    assert new_kid != kid
    assert lines[1].startswith(f"previous {kid} (in certs until ")
    assert rotated.stderr == (
        "fakeedge: note: an edge running on this keys_dir takes the new key up at its next "
        "certs request, sign-in or unknown token\n"
    )
    assert run("keys", "show", "--config", str(config_file)).output.splitlines()[1:] == lines

    certs = json.loads(run("keys", "show", "--config", str(config_file), "--certs").output)
    assert [k["kid"] for k in certs["keys"]] == [kid, new_kid]  # spec §3: previous first

    # the next token is signed by the new key
    token = run("token", "--config", str(config_file), "--email", "alice@acme.test", "--app", "Admin").output.strip()
    assert jwt.get_unverified_header(token)["kid"] == new_kid


def test_keys_rotate_grace_mistake(config_file: Path) -> None:
    result = run("keys", "rotate", "--config", str(config_file), "--grace", "a week")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "Error: Invalid value for --grace: expected a duration such as 30s, 15m or 24h, got 'a week'"
    )


@pytest.fixture
def demo_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with no fakeedge.yml, and the demo's keys_dir under a private cache folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fakeedge" / "demo-keys"


NO_CONFIG_NOTE = "fakeedge: note: no ./fakeedge.yml, so the built-in demo's config\n"


def test_token_keys_and_explain_fall_back_to_the_demo_config(demo_keys: Path) -> None:
    # after `fakeedge serve` with no config, the same commands work on the demo, as `ca` does
    result = CliRunner().invoke(main, ["token", "--app", "Demo app", "--email", "alice@example.com"])
    assert (result.exit_code, result.stderr) == (0, NO_CONFIG_NOTE)
    claims = decode(
        result.stdout.strip(),
        demo_keys,  # the keys `fakeedge serve` signs with in the demo
        audience=default_aud("demo", "Demo app"),
        issuer="http://127.0.0.1:8787",  # the demo's default listener
    )
    assert claims["email"] == "alice@example.com"

    shown = CliRunner().invoke(main, ["keys", "show"])
    assert (shown.exit_code, shown.stderr) == (0, NO_CONFIG_NOTE)
    assert shown.stdout == f"keys_dir {demo_keys}\ncurrent  {jwt.get_unverified_header(result.stdout.strip())['kid']}\n"

    explained = CliRunner().invoke(main, ["explain", "http://localhost:8787/", "--email", "carol@example.org"])
    assert (explained.exit_code, explained.stderr) == (0, NO_CONFIG_NOTE)
    assert explained.stdout == (
        "url       http://localhost/\n"
        "ingress   rule 0: localhost -> http://127.0.0.1:9\n"
        f"app       'Demo app' via localhost (aud {default_aud('demo', 'Demo app')})\n"
        "caller    carol@example.org (typed address, no attributes) from 127.0.0.1\n"
        "policy    none matched: deny by default\n"
        "why       no policy admits carol@example.org: Allow policy 'example staff': no include rule matched "
        "(email_domain example.com)\n"
        "outcome   403 block page (identity refused)\n"
    )


def test_a_given_config_that_is_missing_is_still_an_error(demo_keys: Path) -> None:
    result = CliRunner().invoke(main, ["token", "--config", "mine.yml", "--app", "Demo app", "--email", "a@b.test"])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "fakeedge: error: mine.yml: cannot read the file (No such file or directory)\n"
