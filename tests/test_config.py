"""Config parsing: every mistake is one line naming the file, the key and what was valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fakeedge.config import default_aud, load_config, parse_config, parse_destination, parse_duration
from fakeedge.errors import ConfigError

from .conftest import base_config

ORIGIN = "http://127.0.0.1:9"


def _with(path: str, value: Any) -> dict[str, Any]:
    cfg = base_config(ORIGIN)
    node: Any = cfg
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return cfg


ERRORS = [
    (
        "unknown-top",
        _with("tema", "x"),
        "f.yml: tema: unknown key 'tema'; did you mean 'team'? valid: team, team_domain, listen, keys_dir, users, allow_any_email, one_time_pin, default_country, service_tokens, apps, groups, email_lists, ip_lists, ingress, strict_service_token_auth, logout_delay, origin_timeout, tls_listen, ingress_file, branding, admin_token, journal",
    ),
    (
        "rule-typo",
        _with("apps.0.policies.0.include", [{"emial": {"email": "a@b.test"}}]),
        "f.yml: apps[0].policies[0].include[0]: unknown rule 'emial'; did you mean 'email'? valid: any_valid_service_token, auth_method, email, email_domain, email_list, everyone, geo, github-organization, group, ip, ip_list, login_method, oidc, service_token",
    ),
    (
        "decision",
        _with("apps.0.policies.0.decision", "permit"),
        "f.yml: apps[0].policies[0].decision: unknown decision 'permit'; valid: allow, deny, bypass, non_identity (or the dashboard's Allow, Block, Bypass, Service Auth)",
    ),
    ("aud", _with("apps.0.aud", "XYZ"), "f.yml: apps[0].aud: expected 64 lower-case hex characters, got 'XYZ'"),
    (
        "duration",
        _with("apps.0.session_duration", "1 day"),
        "f.yml: apps[0].session_duration: expected a duration such as 30s, 15m or 24h, got '1 day'",
    ),
    (
        "token-ref",
        _with("apps.1.policies.0.include", [{"service_token": {"token_id": "nobody"}}]),
        "f.yml: apps[1].policies[0].include[0].service_token.token_id: no service token 'nobody'; known: ci-deploy-bot, other-bot",
    ),
    (
        "token-under-allow",
        _with("apps.2.policies.0.include", [{"any_valid_service_token": {}}]),
        "f.yml: apps[2].policies[0].decision: 'any_valid_service_token' rules only work in a non_identity (Service Auth) policy; under Allow the token is ignored (spec §5)",
    ),
    (
        "identity-in-bypass",
        _with("apps.2.policies.0.decision", "bypass"),
        "f.yml: apps[2].policies[0]: a bypass policy cannot use the identity rule 'email_domain' (spec §6.1)",
    ),
    (
        "service-path",
        _with("ingress.0.service", "http://127.0.0.1:3000/api"),
        "f.yml: ingress[0].service: a service URL cannot have a path, got 'http://127.0.0.1:3000/api'",
    ),
    (
        "catch-all-last",
        _with("ingress.5", {"hostname": "x.test", "service": ORIGIN}),
        "f.yml: ingress[5]: the last ingress rule must match all URLs (no hostname, no path), e.g. service: http_status:404",
    ),
    (
        "catch-all-early",
        _with("ingress.0", {"service": ORIGIN}),
        "f.yml: ingress[0]: only the last ingress rule may match all URLs; rules after it would never be used",
    ),
    (
        "ingress-port",
        _with("ingress.0.hostname", "admin.acme.test:443"),
        "f.yml: ingress[0].hostname: a hostname cannot have a port (cloudflared refuses it), got 'admin.acme.test:443'",
    ),
    (
        "listen",
        _with("listen", "127.0.0.1:http"),
        "f.yml: listen: expected HOST:PORT such as 127.0.0.1:8787, got '127.0.0.1:http'",
    ),
    ("team", _with("team", "Acme Corp"), "f.yml: team: expected lower-case letters, digits and '-', got 'Acme Corp'"),
    ("bool", _with("allow_any_email", "yes"), "f.yml: allow_any_email: expected true or false, got str 'yes'"),
    (
        "no-domain",
        _with("apps.0.domain", None),
        "f.yml: apps[0].domain: is required (host[/path] such as admin.acme.test)",
    ),
    (
        "wildcard",
        _with("apps.0.domain", "a.*.acme.test"),
        "f.yml: apps[0].domain: a wildcard may only appear once, in the first label: 'a.*.acme.test'",
    ),
    (
        "country",
        _with("users.0.country", "GBR"),
        "f.yml: users[0].country: expected an ISO 3166 alpha-2 country code such as US, got 'GBR'",
    ),
    (
        "dup-user",
        _with("users.1.email", "ALICE@acme.test"),
        "f.yml: users[1].email: duplicate persona 'ALICE@acme.test'",
    ),
    (
        "no-include",
        _with("apps.0.policies.0.include", []),
        "f.yml: apps[0].policies[0].include: needs at least one rule (include is an OR over its rules)",
    ),
]


@pytest.mark.parametrize(("cfg", "message"), [(c, m) for _, c, m in ERRORS if m], ids=[i for i, _, m in ERRORS if m])
def test_config_errors_name_the_place(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, source="f.yml")
    assert str(info.value) == message


def test_cors_headers_and_preflight_bypass_exclude_each_other() -> None:
    cfg = _with("apps.0.cors_headers", {"allow_all_origins": True})
    cfg["apps"][0]["options_preflight_bypass"] = True
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, source="f.yml")
    assert str(info.value) == (
        "f.yml: apps[0].options_preflight_bypass: cannot be combined with cors_headers: "
        "either Access answers preflights or the origin does (spec §7.4)"
    )


def test_defaults_and_aliases(tmp_path: Path) -> None:
    config = parse_config(base_config(ORIGIN), source="f.yml", base_dir=tmp_path)
    assert config.keys_dir == tmp_path / "keys"
    assert config.listen == ("127.0.0.1", 8787)
    admin, sentry, _ = config.apps
    assert admin.aud == default_aud("acme", "Admin") and len(admin.aud) == 64
    assert admin.session_duration == 3600
    assert [p.decision for p in admin.policies] == ["allow", "non_identity"]
    assert sentry.policies[0].decision == "non_identity"  # "Service Auth" is the dashboard's name
    assert not sentry.has_identity_policy


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400), ("2h45m", 9900), ("300ms", 0.3), ("730h", 2628000), ("15m", 900), (60, 60)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "host", "path"),
    [
        ("admin.acme.test", "admin.acme.test", ""),
        ("Admin.Acme.TEST:8443/", "admin.acme.test", ""),
        ("https://a.test/*", "a.test", ""),
        ("a.test/alpha/*", "a.test", "/alpha/*"),
        ("*.acme.test/api", "*.acme.test", "/api"),
    ],
)
def test_destinations(text: str, host: str, path: str) -> None:
    dest = parse_destination(text)
    assert (dest.host, dest.path) == (host, path)


def _write(tmp_path: Path, cfg: Any) -> Path:
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump(cfg) if not isinstance(cfg, str) else cfg)
    return path


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yml")
    assert str(info.value) == f"{tmp_path / 'missing.yml'}: cannot read the file (No such file or directory)"
    bad = _write(tmp_path, "team: acme\napps: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value).startswith(f"{bad}: line 3: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("command", ["check", "serve"])
def test_cli_reports_config_errors_in_one_line(tmp_path: Path, command: str) -> None:
    path = _write(tmp_path, _with("apps.0.policies.0.include", [{"emial": {"email": "a@b.test"}}]))
    result = subprocess.run(
        [sys.executable, "-m", "fakeedge.cli", command, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"fakeedge: error: {path}: apps[0].policies[0].include[0]: unknown rule 'emial'; did you mean 'email'?"
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_cli_check_summarises(tmp_path: Path) -> None:
    path = _write(tmp_path, base_config(ORIGIN))
    result = subprocess.run(
        [sys.executable, "-m", "fakeedge.cli", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"app 'Admin': admin.acme.test  aud={default_aud('acme', 'Admin')}  policies=2" in result.stdout
    assert "ingress teapot.acme.test -> http_status:418" in result.stdout


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "team_domain",
            "http://[::1",
            "f.yml: team_domain: expected a URL such as https://acme.cloudflareaccess.com, got 'http://[::1'",
        ),
        (
            "team_domain",
            "http://127.0.0.1:abc",
            "f.yml: team_domain: expected a URL such as https://acme.cloudflareaccess.com, got 'http://127.0.0.1:abc'",
        ),
        ("origin_timeout", "0s", "f.yml: origin_timeout: expected a duration above zero such as 30s, got '0s'"),
    ],
)
def test_urls_and_timeouts_are_checked(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with(key, value), source="f.yml")
    assert str(info.value) == message


def test_service_port_is_checked() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with("ingress.0.service", "http://127.0.0.1:abc"), source="f.yml")
    assert str(info.value) == (
        "f.yml: ingress[0].service: expected http://host:port, https://host:port or http_status:<code>, "
        "got 'http://127.0.0.1:abc'"
    )


def test_non_utf8_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "fakeedge.yml"
    path.write_bytes(b"team: acme\n# \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: not UTF-8 text (byte 13)"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300, "999999999999h"])
def test_durations_are_finite_and_bounded(value: float | str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == f"expected a duration within a hundred years, got {value!r}"
