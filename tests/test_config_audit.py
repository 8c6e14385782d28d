"""``fakeedge check``'s config audit: a decision table of fail-open shapes, the examples, and --strict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from fakeedge.cli import main
from fakeedge.config import load_config, parse_config
from fakeedge.config_audit import audit_config
from fakeedge.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STAFF = [{"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]}]
OPEN = [{"name": "open", "decision": "bypass", "include": [{"everyone": {}}]}]
BOTS = [{"name": "bots", "decision": "non_identity", "include": [{"service_token": {"token_id": "ci"}}]}]
TOKENS = [{"name": "ci", "client_id": "c" * 32 + ".access", "client_secret": "s" * 32}]


def config(apps: list[dict[str, Any]], ingress: list[str], **extra: Any) -> dict[str, Any]:
    routes = [{"hostname": host, "service": "http://127.0.0.1:3000"} for host in ingress]
    return {"team": "acme", "apps": apps, "ingress": [*routes, {"service": "http_status:404"}], **extra}


def app(name: str, domain: str | list[str], policies: list[dict[str, Any]] = STAFF) -> dict[str, Any]:
    key = "domain" if isinstance(domain, str) else "destinations"
    return {"name": name, key: domain, "policies": policies}


CASES: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    ("clean", config([app("Admin", "admin.acme.test")], ["admin.acme.test"]), []),
    (
        "public host with a bypass app is on purpose",
        config(
            [app("Admin", "admin.acme.test"), app("Site", "www.acme.test", OPEN)], ["admin.acme.test", "www.acme.test"]
        ),
        [],
    ),
    (
        "unprotected sibling",
        config([app("Admin", "admin.acme.test")], ["admin.acme.test", "admin-api.acme.test"]),
        [("unprotected-sibling", "ingress[1]")],
    ),
    (
        "a host with no protected sibling is not flagged",
        config([app("Admin", "admin.acme.test")], ["admin.acme.test", "status.other.test"]),
        [],
    ),
    (
        "path app leaves the host open",
        config([app("Admin", "admin.acme.test/admin")], ["admin.acme.test"]),
        [("path-app-leaves-host-open", "ingress[0]")],
    ),
    (
        "bypass beside protected paths",
        config([app("Admin", "admin.acme.test"), app("Health", "admin.acme.test/health", OPEN)], ["admin.acme.test"]),
        [("bypass-beside-protected", "apps[1]")],
    ),
    (
        "deep wildcard ingress",
        config([app("Previews", "*.acme.test")], ["*.acme.test"]),
        [("deep-wildcard-ingress", "ingress[0]")],
    ),
    (
        "deep wildcard certificate",
        config([app("Previews", "*.dev.acme.test")], ["pr-1.dev.acme.test"]),
        [("deep-wildcard-certificate", "apps[0]")],
    ),
    (
        "duplicate destination, shadowed app",
        config([app("Admin", "admin.acme.test"), app("Admin 2", "admin.acme.test")], ["admin.acme.test"]),
        [("duplicate-destination", "apps[1]"), ("shadowed-app", "apps[1]")],
    ),
    (
        "duplicate destination, the app still has another",
        config(
            [app("Admin", "admin.acme.test"), app("Both", ["admin.acme.test", "ops.acme.test"])],
            ["admin.acme.test", "ops.acme.test"],
        ),
        [("duplicate-destination", "apps[1]")],
    ),
    (
        "service token in no Service Auth policy",
        config([app("Admin", "admin.acme.test")], ["admin.acme.test"], service_tokens=TOKENS),
        [("unused-service-token", "service_tokens[0]")],
    ),
    (
        "service token in a Service Auth policy",
        config([app("Admin", "admin.acme.test", STAFF + BOTS)], ["admin.acme.test"], service_tokens=TOKENS),
        [],
    ),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fail_open_shapes(raw: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    findings = audit_config(parse_config(raw, source="t.yml"))
    assert [(f.shape, f.where) for f in findings] == expected


def test_messages_say_why_and_what_to_do() -> None:
    raw = config([app("Admin", "admin.acme.test")], ["admin.acme.test", "admin-api.acme.test"])
    (finding,) = audit_config(parse_config(raw, source="t.yml"))
    assert str(finding) == (
        "ingress[1]: admin-api.acme.test reaches http://127.0.0.1:3000 without Access, while its sibling "
        "admin.acme.test is protected: add an app for admin-api.acme.test, or a Bypass app if it is public on "
        "purpose [unprotected-sibling]"
    )


def test_a_service_token_under_allow_is_refused_at_load() -> None:
    policies = [{"name": "bots", "decision": "allow", "include": [{"service_token": {"token_id": "ci"}}]}]
    raw = config([app("Admin", "admin.acme.test", policies)], ["admin.acme.test"], service_tokens=TOKENS)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="t.yml")
    assert str(info.value) == (
        "t.yml: apps[0].policies[0].decision: 'service_token' rules only work in a non_identity (Service Auth) "
        "policy; under Allow the token is ignored (spec §5)"
    )


# The examples' warnings, each intended and said so in the example (docs/audit.md lists them).
EXAMPLE_WARNINGS = {
    "admin-sso.yml": [],
    "dev-previews.yml": [("deep-wildcard-ingress", "ingress[2]")],
    "internal-tools.yml": [],
    "tunnel-admin-api.yml": [("unprotected-sibling", "ingress[0]"), ("unprotected-sibling", "ingress[2]")],
}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yml")))
def test_examples_warnings_are_the_documented_ones(name: str) -> None:
    findings = audit_config(load_config(EXAMPLES / name))
    assert [(f.shape, f.where) for f in findings] == EXAMPLE_WARNINGS[name]
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    for shape, _ in EXAMPLE_WARNINGS[name]:
        assert f"fakeedge check: {shape}" in text, f"{name} does not say why its {shape} warning is intended"


def test_check_warns_and_strict_fails(tmp_path: Path) -> None:
    path = tmp_path / "fakeedge.yml"
    raw = config([app("Admin", "admin.acme.test")], ["admin.acme.test", "admin-api.acme.test"])
    path.write_text(yaml.safe_dump({**raw, "keys_dir": str(tmp_path / "keys")}), encoding="utf-8")
    warning = (
        "  warning: ingress[1]: admin-api.acme.test reaches http://127.0.0.1:3000 without Access, while its "
        "sibling admin.acme.test is protected: add an app for admin-api.acme.test, or a Bypass app if it is "
        "public on purpose [unprotected-sibling]"
    )
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == warning
    result = CliRunner().invoke(main, ["check", "--config", str(path), "--strict"])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == warning
    assert result.stderr == (f"fakeedge: error: {path}: 1 fail-open warning(s), and --strict makes them errors\n")
    clean = tmp_path / "clean.yml"
    raw = config([app("Admin", "admin.acme.test")], ["admin.acme.test"])
    clean.write_text(yaml.safe_dump({**raw, "keys_dir": str(tmp_path / "keys")}), encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--config", str(clean), "--strict"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
