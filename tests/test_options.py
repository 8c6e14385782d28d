"""Issue 17: every config key declared once in fakeedge.options; the parser, its errors and
docs/config-reference.md all come from that declaration, and these tests keep them together."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakeedge import config as config_module
from fakeedge.config import Config, parse_config
from fakeedge.errors import ConfigError
from fakeedge.options import REQUIRED, SECTIONS, Derived, keys, reference

ROOT = Path(__file__).parent.parent
REFERENCE = ROOT / "docs" / "config-reference.md"
SOURCE = "f.yml"
ORIGIN = "http://127.0.0.1:9"
AUD = "a" * 64

# Every declared key that fakeedge honours, each at least once (refused ones are tested below).
EVERY_KEY: dict[str, Any] = {
    "team": "acme",
    "team_domain": "http://127.0.0.1:8787",
    "listen": "127.0.0.1:0",
    "keys_dir": "keys",
    "users": [
        {
            "email": "alice@acme.test",
            "name": "Alice",
            "groups": ["admins"],
            "github_orgs": ["acme"],
            "country": "GB",
            "amr": ["pwd", "otp"],
            "idp": "fakeedge",
            "custom": {"dept": "eng"},
        }
    ],
    "allow_any_email": True,
    "one_time_pin": False,
    "default_country": "US",
    "service_tokens": [
        {
            "name": "ci",
            "id": "ci-id",
            "client_id": "ci.access",
            "client_secret": "secret-1",
            "previous_client_secrets": [{"client_secret": "secret-0", "expires_at": "2030-01-01T00:00:00Z"}],
            "expires_at": "2031-01-01T00:00:00Z",
            "disabled": False,
        }
    ],
    "groups": [
        {
            "id": "g-admins",
            "name": "admins",
            "include": [{"email_domain": {"domain": "acme.test"}}],
            "exclude": [{"email": {"email": "mallory@acme.test"}}],
            "require": [{"auth_method": {"auth_method": "pwd"}}],
        }
    ],
    "email_lists": {"contractors": ["carol@example.org"]},
    "ip_lists": {"office": ["192.0.2.0/24"]},
    "policies": [
        {
            "name": "bots",
            "id": "bots-id",
            "decision": "non_identity",
            "include": [
                {"service_token": {"token_id": "ci"}},
                {"any_valid_service_token": {}},
                {"ip": {"ip": "198.51.100.7"}},
                {"ip_list": {"id": "office"}},
            ],
            "require": [{"geo": {"country_code": "GB"}}],
            "exclude": [{"everyone": {}}],
        },
        {"name": "open", "decision": "bypass", "include": [{"everyone": {}}]},
    ],
    "apps": [
        {
            "name": "Admin",
            "domain": "admin.acme.test",
            "domains": ["admin2.acme.test"],
            "self_hosted_domains": ["admin3.acme.test"],
            "destinations": [{"type": "public", "uri": "admin4.acme.test/api"}, "admin5.acme.test"],
            "aud": AUD,
            "session_duration": "12h",
            "policies": [
                {
                    "name": "staff",
                    "id": "staff-id",
                    "decision": "allow",
                    "precedence": 3,
                    "include": [
                        {"email": {"email": "alice@acme.test"}},
                        {"email_domain": {"domain": "acme.test"}},
                        {"email_list": {"id": "contractors"}},
                        {"github-organization": {"name": "acme", "identity_provider_id": "fakeedge"}},
                        {"oidc": {"claim_name": "groups", "claim_value": "admins", "identity_provider_id": "fakeedge"}},
                        {"group": {"id": "g-admins"}},
                    ],
                    "require": [{"login_method": {"id": "fakeedge"}}],
                    "exclude": [{"auth_method": {"auth_method": "sms"}}],
                    "session_duration": "1h",
                    "purpose_justification_required": True,
                    "purpose_justification_prompt": "Why?",
                    "mfa_config": {"mfa_disabled": False, "allowed_authenticators": ["totp"], "session_duration": "2h"},
                    "approval_required": False,
                },
                {"id": "bots-id", "precedence": 1},
                {"name": "open", "precedence": 2},
            ],
            "same_site_cookie_attribute": "lax",
            "http_only_cookie_attribute": True,
            "path_cookie_attribute": False,
            "enable_binding_cookie": True,
            "service_auth_401_redirect": True,
            "read_service_tokens_from_header": "X-Token",
            "options_preflight_bypass": False,
            "cors_headers": {
                "allow_all_origins": False,
                "allowed_origins": ["https://ui.acme.test"],
                "allow_all_methods": False,
                "allowed_methods": ["GET"],
                "allow_all_headers": False,
                "allowed_headers": ["X-Requested-With"],
                "allow_credentials": True,
                "max_age": 600,
            },
            "custom_deny_url": "https://intranet.acme.test/denied",
            "custom_non_identity_deny_url": "https://intranet.acme.test/bots",
            "custom_deny_message": "Ask #it",
            "type": "self_hosted",
            "oauth_configuration": {
                "enabled": True,
                "dynamic_client_registration": {
                    "enabled": True,
                    "allow_any_on_localhost": True,
                    "allow_any_on_loopback": False,
                    "allowed_uris": ["https://cli.acme.test/*"],
                },
                "grant": {"access_token_lifetime": "10m", "session_duration": "8h"},
            },
            "eager_redirect_cookie": True,
            "mfa_config": {"mfa_disabled": True, "allowed_authenticators": ["security_key"], "session_duration": "3h"},
        }
    ],
    "ingress": [
        {
            "hostname": "admin.acme.test",
            "path": "^/",
            "service": ORIGIN,
            "originRequest": {
                "access": {"required": True},
                "bastionMode": False,
                "caPool": "ca.pem",
                "connectTimeout": "10s",
                "disableChunkedEncoding": False,
                "http2Origin": False,
                "httpHostHeader": "internal.acme.test",
                "ipRules": [],
                "keepAliveConnections": 10,
                "keepAliveTimeout": "90s",
                "matchSNItoHost": False,
                "noHappyEyeballs": False,
                "noTLSVerify": False,
                "originServerName": "internal.acme.test",
                "proxyAddress": "127.0.0.1",
                "proxyPort": 0,
                "proxyType": "",
                "tcpKeepAlive": "30s",
                "tlsTimeout": "10s",
            },
        },
        {"service": "http_status:404"},
    ],
    "strict_service_token_auth": True,
    "logout_delay": "1s",
    "origin_timeout": "30s",
    "tls_listen": "127.0.0.1:0",
    "branding": {
        "name": "Acme",
        "logo_url": "/logo.png",
        "background_color": "#ffffff",
        "header_color": "#000",
        "button_color": "#8a43e1",
        "description": "Acme's tools",
    },
    "admin_token": "an-admin-token-of-16+",
    "deny_unmatched_requests": True,
    "deny_unmatched_requests_exempted_zone_names": ["public.test"],
    "mfa_config": {"allowed_authenticators": ["totp", "biometrics"], "session_duration": "4h"},
    "mfa_required_for_all_apps": True,
    "journal": 10,
}
INGRESS_FILE = """\
tunnel: 6ff42ae2-765d-4adf-8112-31c55c1551ef
originRequest: {connectTimeout: 5s, noTLSVerify: true}
ingress:
  - {hostname: api.acme.test, service: "http://127.0.0.1:9"}
  - service: http_status:404
"""

Seen = tuple[str, str, str, frozenset[str]]  # (file, key path, section id, keys given)


def _parse(raw: dict[str, Any], base_dir: Path) -> Config:
    return parse_config(copy.deepcopy(raw), source=SOURCE, base_dir=base_dir)


def _outcome(raw: dict[str, Any], base_dir: Path) -> Config | str:
    try:
        return _parse(raw, base_dir)
    except ConfigError as exc:
        return str(exc)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Seen]]:
    """Every declared mapping the parser reads while the test runs, with the keys it held."""
    found: list[Seen] = []
    real = config_module._Reader.mapping

    def mapping(self: Any, value: Any, key: str, section_id: str, *, leave_out: str = "") -> dict[Any, Any]:
        given = frozenset(value) if isinstance(value, dict) else frozenset()
        found.append((self.source, key, section_id, given))
        return real(self, value, key, section_id, leave_out=leave_out)

    monkeypatch.setattr(config_module._Reader, "mapping", mapping)
    yield found


def _every_key_configs(tmp_path: Path) -> list[dict[str, Any]]:
    (tmp_path / "cloudflared.yml").write_text(INGRESS_FILE)
    return [EVERY_KEY, {"team": "acme", "ingress_file": "cloudflared.yml"}]


def test_the_config_reference_is_current() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == reference(), (
        "docs/config-reference.md is stale: run `python -m fakeedge.options > docs/config-reference.md`"
    )


def test_the_reference_is_what_the_module_prints() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "fakeedge.options"], capture_output=True, text=True, check=True, timeout=60
    )
    assert printed.stdout == reference()


def test_every_declared_key_is_documented() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    chunks = re.split(r"^## ", text, flags=re.M)[1:]
    assert len(chunks) == len(SECTIONS)
    for declared, chunk in zip(SECTIONS, chunks, strict=True):
        documented = re.findall(r"^\| `([^`]+)` \| [^|]+ \| [^|]+ \| (.+) \|$", chunk, flags=re.M)
        assert [k for k, _ in documented] == list(keys(declared.id)), f"section {declared.id} of {REFERENCE.name}"
        for key, meaning in documented:
            assert len(meaning) >= 8, f"{declared.id}.{key}: say what the key does"
        assert declared.about, f"section {declared.id}: say what it is"


def test_the_parser_accepts_every_declared_key(tmp_path: Path, seen: list[Seen]) -> None:
    for raw in _every_key_configs(tmp_path):
        _parse(raw, tmp_path)
    given = {(section_id, key) for _, _, section_id, present in seen for key in present}
    given |= {("top", key) for raw in _every_key_configs(tmp_path) for key in raw}
    given |= {("rule", section_id.removeprefix("rule.")) for _, _, section_id, _ in seen if section_id != "rule"}
    honoured = {(s.id, o.key) for s in SECTIONS for o in s.options if o.refused is None}
    assert honoured - given == set(), "declared keys the every-key config does not use"
    assert {section_id for _, _, section_id, _ in seen} | {"top", "rule"} == {s.id for s in SECTIONS}


def _at(raw: dict[str, Any], path: str) -> dict[str, Any]:
    node: Any = raw
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        node = node[int(index)] if index else node[name]
    assert isinstance(node, dict)
    return node


def _occurrences(tmp_path: Path, seen: list[Seen]) -> list[tuple[str, str]]:
    """(key path, section id): the first place the every-key config holds each declared mapping."""
    _parse(EVERY_KEY, tmp_path)
    first: dict[str, str] = {}
    for source, path, section_id, _ in seen:
        if source == SOURCE:
            first.setdefault(section_id, path)
    return [("", "top"), *((path, section_id) for section_id, path in first.items())]


def test_the_parser_refuses_undeclared_keys_everywhere(tmp_path: Path, seen: list[Seen]) -> None:
    places = _occurrences(tmp_path, seen)
    assert len(places) == len(SECTIONS) - 1  # every mapping but the rule (one key, its selector)
    for path, section_id in places:
        raw = copy.deepcopy(EVERY_KEY)
        _at(raw, path)["zz_undeclared"] = 1
        where = f"{path}.zz_undeclared" if path else "zz_undeclared"
        shown = [
            k
            for k in keys(section_id)
            if not (section_id == "mfa_config" and path == "mfa_config" and k == "mfa_disabled")
        ]
        assert _outcome(raw, tmp_path) == f"{SOURCE}: {where}: unknown key 'zz_undeclared' valid: {', '.join(shown)}"


def test_the_declared_defaults_are_the_parsers(tmp_path: Path, seen: list[Seen]) -> None:
    """Writing a key's documented default changes nothing: the reference does not lie."""
    checked = 0
    for path, section_id in _occurrences(tmp_path, seen):
        for option in next(s for s in SECTIONS if s.id == section_id).options:
            if option.default is None or option.default is REQUIRED or isinstance(option.default, Derived):
                continue
            without, written = copy.deepcopy(EVERY_KEY), copy.deepcopy(EVERY_KEY)
            _at(without, path).pop(option.key, None)
            _at(written, path)[option.key] = copy.deepcopy(option.default)
            assert _outcome(without, tmp_path) == _outcome(written, tmp_path), f"{path or 'top'}.{option.key}"
            checked += 1
    assert checked > 60


@pytest.mark.parametrize(
    ("path", "key", "value", "error"),
    [
        (
            "apps[0].policies[0]",
            "approval_groups",
            [{"email_addresses": ["boss@acme.test"], "approvals_needed": 1}],
            "f.yml: apps[0].policies[0].approval_groups: is not supported yet: fakeedge does not check who approves: "
            "whoever may call POST /cdn-cgi/fakeedge/approvals approves; remove it (approval_required alone works)",
        ),
        (
            "apps[0].policies[0].include[3].github-organization",
            "team",
            "admins",
            "f.yml: apps[0].policies[0].include[3].github-organization.team: is not supported yet: personas have no "
            "GitHub teams, so the rule would admit the whole organisation; remove it, or match a persona group with "
            "an oidc rule on groups",
        ),
        (
            "policies[1]",
            "approval_groups",
            [],
            "f.yml: policies[1].approval_groups: is not supported yet: fakeedge does not check who approves: "
            "whoever may call POST /cdn-cgi/fakeedge/approvals approves; remove it (approval_required alone works)",
        ),
    ],
    ids=["approval_groups", "github-team", "reusable-policy-approval_groups"],
)
def test_a_key_fakeedge_cannot_honour_is_refused(tmp_path: Path, path: str, key: str, value: Any, error: str) -> None:
    raw = copy.deepcopy(EVERY_KEY)
    _at(raw, path)[key] = value
    assert _outcome(raw, tmp_path) == error


def test_only_cloudflared_keys_are_accepted_without_being_honoured(tmp_path: Path) -> None:
    not_honoured = {(s.id, o.key) for s in SECTIONS for o in s.options if not o.honoured}
    assert {section_id for section_id, _ in not_honoured} == {"originRequest"}
    # and fakeedge says so: each is listed as not emulated
    (tmp_path / "cloudflared.yml").write_text(INGRESS_FILE)
    listed = _parse(EVERY_KEY, tmp_path).not_emulated
    assert sorted(listed) == sorted(f"ingress[0].originRequest.{key}" for _, key in not_honoured)


def test_the_rule_kind_types_name_the_declared_rules() -> None:
    """config's Literal types for rule kinds (for mypy's exhaustive matches) agree with the declaration."""
    from fakeedge.options import section

    declared = {o.key: o.type for o in section("rule").options}
    assert set(config_module.RULE_KINDS) == set(declared)
    identity = {k for k, t in declared.items() if t.startswith("identity")}
    non_identity = {k for k, t in declared.items() if t.startswith("non-identity")}
    assert set(config_module.IDENTITY_RULES) == identity
    assert set(config_module.NON_IDENTITY_RULES) == non_identity
