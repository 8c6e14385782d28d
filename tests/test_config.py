"""Config parsing: every mistake is one line naming the file, the key and what was valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from fakeedge.cli import main
from fakeedge.config import (
    APP_KEYS,
    RULE_KINDS,
    TOP_KEYS,
    default_aud,
    load_config,
    parse_config,
    parse_destination,
    parse_duration,
)
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
        "f.yml: tema: unknown key 'tema'; did you mean 'team'? valid: team, team_domain, listen, keys_dir, users, allow_any_email, one_time_pin, default_country, service_tokens, apps, groups, email_lists, ip_lists, ingress, strict_service_token_auth, logout_delay, origin_timeout, tls_listen, ingress_file, branding, admin_token, policies, deny_unmatched_requests, deny_unmatched_requests_exempted_zone_names, mfa_config, mfa_required_for_all_apps, journal",
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
    (
        "team",
        _with("team", "Acme Corp"),
        "f.yml: team: expected lower-case letters, digits and '-' (at most 63), got 'Acme Corp'",
    ),
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



def test_self_hosted_domains_is_the_apis_name_for_domains(tmp_path: Path) -> None:
    """Cloudflare's API names the list of an app's hosts ``self_hosted_domains`` (older) or
    ``destinations``; both read as fakeedge's ``domains``."""
    apis = base_config(ORIGIN)
    apis["apps"][0]["self_hosted_domains"] = ["ops.acme.test", "admin.acme.test/x/*"]
    ours = base_config(ORIGIN)
    ours["apps"][0]["domains"] = ["ops.acme.test", "admin.acme.test/x/*"]
    one = parse_config(apis, source="f.yml", base_dir=tmp_path).apps[0]
    other = parse_config(ours, source="f.yml", base_dir=tmp_path).apps[0]
    assert one.destinations == other.destinations and len(one.destinations) >= 2

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
    assert str(info.value) == f"{bad}: apps[0]: line 3: expected the node content, but found '<stream end>'"


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
    assert str(info.value) == f"{path}: line 2: not UTF-8 text (byte 13)"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300, "999999999999h"])
def test_durations_are_finite_and_bounded(value: float | str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == f"expected a duration within a hundred years, got {value!r}"


def _load_lines(tmp_path: Path, text: str | bytes) -> list[str]:
    """The lines of the ConfigError that loading ``text`` raises, the file named ``f.yml``."""
    path = tmp_path / "f.yml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "\n".join(str(e) for e in info.value.errors)
    return [str(e).replace(str(path), "f.yml", 1) for e in info.value.errors]


def _bomb(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "team: acme\n" + "\n".join(lines) + "\n"


YAML_ERRORS = [
    (
        "dup-top",
        "team: acme\nteam: acme\n",
        ["f.yml: team: written twice (lines 1 and 2); YAML would keep only the last"],
    ),
    (
        "dup-nested",
        "team: acme\napps:\n  - name: A\n    domain: a.test\n  - name: B\n    domain: b.test\n"
        "    policies:\n      - {name: p, decision: allow, include: [{everyone: {}}], name: q}\n",
        ["f.yml: apps[1].policies[0].name: written twice (lines 8 and 8); YAML would keep only the last"],
    ),
    (
        "dup-same-value-spelled-twice",
        "team: acme\nlisten: 127.0.0.1:1\nusers: []\n0x1: a\n1: b\n",
        ["f.yml: 1: written twice (lines 4 and 5); YAML would keep only the last"],
    ),
    (
        "billion-laughs",
        _bomb(9),
        [
            "f.yml: l8: more than 100000 values once aliases are expanded (an alias bomb?)",
        ],
    ),
    ("alias-cycle", "team: acme\nusers: &u [*u]\n", ["f.yml: users: nested more than 40 levels deep"]),
    ("deep", "team: acme\napps: " + "[" * 3000 + "]" * 3000 + "\n", ["f.yml: apps: nested more than 40 levels deep"]),
    (
        "huge-int",
        "team: acme\nlogout_delay: " + "9" * 5000 + "\n",
        ["f.yml: logout_delay: not a usable int: '" + "9" * 60 + "…'"],
    ),
    (
        "bad-date",
        "team: acme\nlogout_delay: 2001-13-45\n",
        ["f.yml: logout_delay: not a usable timestamp: '2001-13-45'"],
    ),
    ("binary", b"\x00\x01\x02garbage", ["f.yml: line 1: character U+0000 is not allowed in YAML"]),
    ("control-char", "team: acme\nname: a\x07b\n", ["f.yml: line 2: character U+0007 is not allowed in YAML"]),
    ("not-utf8", b"team: acme\n\xc3\x28\n", ["f.yml: line 2: not UTF-8 text (byte 11)"]),
    ("empty", "", ["f.yml: team: is required (a string)"]),
    (
        "syntax",
        "team: acme\napps:\n  - name: A\n    policies:\n      - {name: x, include: [{email: {email: a}}\n  - name: B\n",
        ["f.yml: apps[0].policies[0].include[1]: line 6: expected ',' or ']', but got '-'"],
    ),
    ("syntax-at-top", "team: acme\n: x\n", ["f.yml: line 2: expected <block end>, but found ':'"]),
    ("top-list", "- team: acme\n", ["f.yml: expected a mapping of settings such as 'team: acme', got a list"]),
    (
        "python-tag",
        "team: !!python/name:os.system x\n",
        ["f.yml: line 1: could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'"],
    ),
]


@pytest.mark.parametrize(("text", "lines"), [(t, m) for _, t, m in YAML_ERRORS], ids=[i for i, _, _ in YAML_ERRORS])
def test_yaml_that_is_ambiguous_or_hostile(tmp_path: Path, text: str | bytes, lines: list[str]) -> None:
    assert _load_lines(tmp_path, text) == lines


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    # `<<: *base` then the same key again is YAML's way to override, not a key written twice
    path = tmp_path / "f.yml"
    path.write_text(
        "team: acme\nbase: &base {name: A, domain: a.test}\n".replace("base: &base", "apps:\n  - &base")
        + "  - {<<: *base, name: B, domain: b.test}\n"
    )
    assert [app.name for app in load_config(path).apps] == ["A", "B"]


def _errors(cfg: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, source="f.yml")
    assert str(info.value) == "\n".join(str(e) for e in info.value.errors)
    return [str(e) for e in info.value.errors]


def test_every_independent_error_is_reported() -> None:
    cfg = _with("tema", "acme")
    cfg["team"] = "Acme"
    cfg["users"][1]["country"] = "GBR"
    cfg["apps"][0]["sesion_duration"] = "1h"
    cfg["apps"][1]["policies"][0]["decision"] = "permit"
    cfg["apps"][2]["policies"][0]["include"] = [{"emial": {"email": "a@b.test"}}, {"ip": {"ip": "10.0.0.300"}}]
    cfg["ingress"][1]["service"] = "ftp://x"
    cfg["origin_timeout"] = -1
    assert _errors(cfg) == [
        "f.yml: tema: unknown key 'tema'; did you mean 'team'? valid: " + ", ".join(TOP_KEYS),
        "f.yml: team: expected lower-case letters, digits and '-' (at most 63), got 'Acme'",
        "f.yml: users[1].country: expected an ISO 3166 alpha-2 country code such as US, got 'GBR'",
        "f.yml: apps[0].sesion_duration: unknown key 'sesion_duration'; did you mean 'session_duration'? valid: "
        + ", ".join(APP_KEYS),
        "f.yml: apps[1].policies[0].decision: unknown decision 'permit'; valid: allow, deny, bypass, non_identity "
        "(or the dashboard's Allow, Block, Bypass, Service Auth)",
        "f.yml: apps[2].policies[0].include[0]: unknown rule 'emial'; did you mean 'email'? valid: "
        + ", ".join(RULE_KINDS),
        "f.yml: apps[2].policies[0].include[1].ip.ip: expected an IP address or CIDR such as 192.0.2.0/24, "
        "got '10.0.0.300'",
        "f.yml: ingress[1].service: expected http://host:port, https://host:port or http_status:<code>, got 'ftp://x'",
        "f.yml: origin_timeout: expected a duration of zero or more such as 30s, got -1",
    ]


def test_a_reference_to_a_broken_item_adds_no_line() -> None:
    # the token is reported once; the policies naming it do not add "no service token" lines
    cfg = _with("service_tokens.0.client_secret", None)
    assert _errors(cfg) == ["f.yml: service_tokens[0].client_secret: is required (a string)"]
    cfg = _with("groups", [{"name": "staff", "include": [{"email_domain": {"domain": "-"}}]}])
    cfg["apps"][2]["policies"][0]["include"] = [{"group": {"id": "staff"}}]
    assert _errors(cfg) == [
        "f.yml: groups[0].include[0].email_domain.domain: expected a domain such as acme.test, got '-'"
    ]


@pytest.mark.parametrize("command", ["check", "serve"])
def test_cli_prints_each_error_on_its_line(tmp_path: Path, command: str) -> None:
    cfg = _with("apps.0.policies.0.include", [{"emial": {"email": "a@b.test"}}])
    cfg["apps"][1]["domain"] = "a b.test"
    path = _write(tmp_path, cfg)
    result = subprocess.run(
        [sys.executable, "-m", "fakeedge.cli", command, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [
        f"fakeedge: error: {path}: apps[0].policies[0].include[0]: unknown rule 'emial'; did you mean 'email'? "
        "valid: " + ", ".join(RULE_KINDS),
        f"fakeedge: error: {path}: apps[1].domain: expected host[/path] such as admin.acme.test/api, got 'a b.test'",
    ]


def test_check_on_a_cloudflared_file_points_to_ingress_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(
        "tunnel: 6ff42ae2\ncredentials-file: /etc/cloudflared/x.json\ningress:\n  - service: http_status:404\n"
    )
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"fakeedge: error: {path}: tunnel: this is a cloudflared config.yml, not a fakeedge config: route by it "
        "from a fakeedge config with 'team: <your team>' and 'ingress_file: config.yml'\n"
    )
    assert _errors({"team": "acme", "credentials-file": "x.json"}) == [
        "f.yml: credentials-file: unknown key 'credentials-file'; to route by a cloudflared config.yml, "
        "name it in ingress_file:"
    ]


LONG = "x" * 300
VALUE_ERRORS = [
    (
        "long-value",
        "apps.0.domain",
        LONG,
        f"f.yml: apps[0].domain: expected host[/path] such as admin.acme.test/api, got '{'x' * 60}…'",
    ),
    (
        "long-key",
        f"apps.0.{LONG}",
        1,
        f"f.yml: apps[0].{'x' * 60}…: unknown key; valid: " + ", ".join(APP_KEYS),
    ),
    (
        "long-rule",
        "apps.0.policies.0.include",
        [{LONG: {}}],
        f"f.yml: apps[0].policies[0].include[0]: unknown rule '{'x' * 60}…' valid: " + ", ".join(RULE_KINDS),
    ),
    (
        "control-in-value",
        "users.0.name",
        "Al\nice\x1b[31m",
        "f.yml: users[0].name: expected text without control characters, got 'Al\\nice\\x1b[31m'",
    ),
    ("control-in-key", "a\nb", 1, "f.yml: a\\nb: unknown key 'a\\nb' valid: " + ", ".join(TOP_KEYS)),
    (
        "line-separator",
        "apps.0.name",
        "A\u2028B",
        "f.yml: apps[0].name: expected text without control characters, got 'A\\u2028B'",
    ),
    ("huge-int", "apps.0.name", 10**400, "f.yml: apps[0].name: expected a non-empty string, got int a 1329-bit number"),
    (
        "huge-duration",
        "apps.0.session_duration",
        10**400,
        "f.yml: apps[0].session_duration: expected a duration within a hundred years, got a 1329-bit number",
    ),
    (
        "nan-duration",
        "apps.0.session_duration",
        float("nan"),
        "f.yml: apps[0].session_duration: expected a duration within a hundred years, got nan",
    ),
    (
        "inf-duration",
        "logout_delay",
        float("inf"),
        "f.yml: logout_delay: expected a duration within a hundred years, got inf",
    ),
    (
        "negative-session",
        "apps.0.session_duration",
        -60,
        "f.yml: apps[0].session_duration: expected a duration of zero or more such as 30s, got -60",
    ),
    (
        "negative-policy-session",
        "apps.0.policies.0.session_duration",
        -1.5,
        "f.yml: apps[0].policies[0].session_duration: expected a duration of zero or more such as 30s, got -1.5",
    ),
    (
        "zero-connect-timeout",
        "ingress.0.originRequest",
        {"connectTimeout": 0},
        "f.yml: ingress[0].originRequest.connectTimeout: expected a duration above zero such as 30s, got 0",
    ),
    (
        "host-with-space",
        "ingress.0.hostname",
        "admin acme.test",
        "f.yml: ingress[0].hostname: expected a host name such as app.acme.test, got 'admin acme.test'",
    ),
    (
        "label-with-hyphen",
        "apps.0.domain",
        "-admin.acme.test",
        "f.yml: apps[0].domain: expected host[/path] such as admin.acme.test/api, got '-admin.acme.test'",
    ),
    (
        "label-too-long",
        "apps.0.domain",
        "a" * 64 + ".test",
        "f.yml: apps[0].domain: expected host[/path] such as admin.acme.test/api, got '" + "a" * 60 + "…'",
    ),
    (
        "team-too-long",
        "team",
        "a" * 64,
        "f.yml: team: expected lower-case letters, digits and '-' (at most 63), got '" + "a" * 60 + "…'",
    ),
    (
        "service-host",
        "ingress.0.service",
        "http://a b:80",
        "f.yml: ingress[0].service: expected http://host:port, https://host:port or http_status:<code>, got 'http://a b:80'",
    ),
    (
        "service-port-0",
        "ingress.0.service",
        "http://127.0.0.1:0",
        "f.yml: ingress[0].service: expected http://host:port, https://host:port or http_status:<code>, got 'http://127.0.0.1:0'",
    ),
    (
        "team-domain-port-0",
        "team_domain",
        "https://acme.test:0",
        "f.yml: team_domain: expected a URL such as https://acme.cloudflareaccess.com, got 'https://acme.test:0'",
    ),
    (
        "listen-port-alone",
        "listen",
        8080,
        "f.yml: listen: expected HOST:PORT such as 127.0.0.1:8787 (a port alone is :8080), got '8080'",
    ),
    (
        "listen-signed-port",
        "listen",
        "127.0.0.1:+80",
        "f.yml: listen: expected HOST:PORT such as 127.0.0.1:8787, got '127.0.0.1:+80'",
    ),
    (
        "listen-host",
        "listen",
        "local host:80",
        "f.yml: listen: expected HOST:PORT such as 127.0.0.1:8787, got 'local host:80'",
    ),
    (
        "deny-url",
        "apps.0.custom_deny_url",
        "javascript:alert(1)",
        "f.yml: apps[0].custom_deny_url: expected an http(s) URL such as https://intranet.acme.test/denied, got 'javascript:alert(1)'",
    ),
    (
        "header-name",
        "apps.0.read_service_tokens_from_header",
        "X Token",
        "f.yml: apps[0].read_service_tokens_from_header: expected a header name such as Authorization, got 'X Token'",
    ),
    (
        "precedence",
        "apps.0.policies.0.precedence",
        "first",
        "f.yml: apps[0].policies[0].precedence: expected a whole number from 1, got str 'first'",
    ),
    (
        "claim-nan",
        "users.0.custom",
        {"level": float("nan")},
        "f.yml: users[0].custom.level: expected a JSON value, got float nan",
    ),
    ("claim-key", "users.0.custom", {1: "x"}, "f.yml: users[0].custom.1: a claim name must be a string, got int 1"),
    ("dup-token-id", "service_tokens.1.id", "same", None),
    (
        "dup-group",
        "groups",
        [{"name": "g", "include": [{"everyone": {}}]}, {"name": "g", "include": [{"everyone": {}}]}],
        "f.yml: groups[1].id: duplicate Access group 'g'",
    ),
    ("dup-app-name", "apps.1.name", "Admin", "f.yml: apps[1].name: duplicate app name 'Admin'"),
    (
        "email-list-entry",
        "email_lists",
        {"staff": ["alice"]},
        "f.yml: email_lists.staff[0]: expected an email address, got 'alice'",
    ),
    (
        "ip-list-entry",
        "ip_lists",
        {"office": ["10.0.0.0/33"]},
        "f.yml: ip_lists.office[0]: expected an IP address or CIDR such as 192.0.2.0/24, got '10.0.0.0/33'",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), [v[1:] for v in VALUE_ERRORS], ids=[v[0] for v in VALUE_ERRORS])
def test_values_are_checked_and_shown_cut(path: str, value: Any, message: str | None) -> None:
    cfg = _with(path, value)
    if message is None:  # dup-token-id
        cfg["service_tokens"][0]["id"] = "same"
        message = "f.yml: service_tokens[1].id: duplicate service token id 'same'"
    assert _errors(cfg) == [message]


@pytest.mark.parametrize("value", ["1" * 20_000, "1" * 2_000_000 + "h", "1h" * 200])
def test_a_long_duration_is_refused_in_linear_time(value: str) -> None:
    """A run of digits with no unit was quadratic (20,000 digits: 18 s): it reaches the parser through
    config files and the control API's clock. Bounded by a thread join, not timed: linear takes ms."""
    import threading

    outcome: list[str] = []

    def parse() -> None:
        try:
            parse_duration(value)
        except ValueError as e:
            outcome.append(str(e))

    worker = threading.Thread(target=parse, daemon=True)
    worker.start()
    worker.join(5.0)
    assert len(outcome) == 1, "parse_duration did not answer within 5 s"
    assert outcome[0] == f"expected a duration such as 30s, 15m or 24h, got {value[:60]!r}"[:-1] + "…'"
