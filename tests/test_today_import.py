"""Issue 13: ``fakeedge import`` from the API's JSON and Terraform, checked by the decisions of the config it writes.

The fixtures in tests/fixtures/import are written from Cloudflare's API reference (``GET
/accounts/{id}/access/apps``, ``/access/policies``, ``/access/groups``, ``/access/service_tokens``,
``/access/organizations``) and the provider's resource docs (v4 blocks, v5 attributes, and
``terraform show -json``): the same team in each shape, with selectors fakeedge does not emulate.
"""

from __future__ import annotations

import ipaddress
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from fakeedge.cli import main
from fakeedge.config import Config, load_config, parse_config
from fakeedge.importer import collect, convert
from fakeedge.policy import Facts, Identity, decide

FIXTURES = Path(__file__).parent / "fixtures" / "import"
OFFICE = ipaddress.ip_address("192.0.2.7")
HOME = ipaddress.ip_address("198.51.100.7")


def _imported(source: str) -> Config:
    cfg, _ = convert(collect([FIXTURES / source]))
    return parse_config(cfg, source="imported.yml")


def _decide(config: Config, app: str, *, email: str | None = None, token: str | None = None,
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = HOME, country: str = "DE", github: tuple[str, ...] = (),
            amr: tuple[str, ...] = ("pwd",)) -> str:  # fmt: skip
    the_app = next(a for a in config.apps if a.name == app)
    client_id = None
    if token is not None:
        client_id = next(t.client_id for t in config.service_tokens if t.name == token)
    who = None if email is None else Identity(email=email, github_orgs=github, amr=amr, country=country)
    return decide(the_app, Facts(ip, country, client_id), who).outcome


# (source, app, caller, expected outcome): the same team in every shape decides the same way
SHAPES = ["api", "tf-v5", "tf-v4", "show.json"]
ADMIN_TABLE: list[tuple[dict[str, Any], str, set[str]]] = [
    ({}, "login", set()),
    ({"email": "alice@acme.test"}, "allow", set()),  # Engineers by email domain
    ({"email": "octo@github.test", "github": ("acme",)}, "allow", set()),  # Engineers by GitHub org
    ({"email": "intern@acme.test"}, "deny", set()),  # excluded from Engineers
    ({"email": "contractor@acme.test"}, "deny", set()),  # Block at precedence 1 beats the Allow at 2
    ({"email": "mallory@evil.test"}, "deny", set()),
    # v4's CI policy requires a device posture: it can never match here, so the token is refused
    ({"token": "ci-deploy-bot"}, "service", {"tf-v4"}),
]


@pytest.mark.parametrize("source", SHAPES)
@pytest.mark.parametrize(("caller", "expected", "except_in"), ADMIN_TABLE)
def test_every_shape_decides_the_admin_app_alike(
    source: str, caller: dict[str, Any], expected: str, except_in: set[str]
) -> None:
    outcome = _decide(_imported(source), "Admin", **caller)
    if source in except_in:
        assert outcome != expected
    else:
        assert outcome == expected


WIKI_TABLE = [
    # the inline legacy policy: acme.test from GB
    ({"email": "alice@acme.test", "country": "GB"}, "allow"),
    ({"email": "alice@acme.test", "country": "DE"}, "deny"),
    # "MFA staff" requires auth_method mfa; its 'certificate' include and 'okta' exclude never match here
    ({"email": "bob@acme.test", "country": "DE", "amr": ("pwd", "mfa")}, "allow"),
    # "Managed only" requires a device-posture group: left out, not widened
    ({"email": "carol@acme.test", "country": "DE", "amr": ("pwd",)}, "deny"),
]


@pytest.mark.parametrize(("caller", "expected"), WIKI_TABLE)
def test_api_wiki_app_approximations_never_widen(caller: dict[str, Any], expected: str) -> None:
    assert _decide(_imported("api"), "Wiki", **caller) == expected


def test_api_organisation_settings_and_skipped_apps() -> None:
    config = _imported("api")
    assert (config.team, config.strict_service_token_auth, config.deny_unmatched_requests) == ("acme", True, True)
    assert config.deny_unmatched_requests_exempted_zone_names == ("public.test",)
    assert [a.name for a in config.apps] == ["Admin", "Wiki"]  # warp and saas apps are not self_hosted
    admin = config.apps[0]
    assert admin.aud == "737646a56ab1df6ec9bddc7e5ca84eaf3b0768850f3ffb5d74f1534911fe3893"
    assert [str(d) for d in admin.destinations] == ["admin.acme.test", "admin.acme.test/api"]
    assert (admin.same_site_cookie_attribute, admin.service_auth_401_redirect) == ("lax", True)
    assert [p.session_duration for p in admin.policies] == [None, 12 * 3600, None]
    assert config.service_tokens[0].expires_at == 1893456000.0  # 2030-01-01T00:00:00Z
    assert (config.mfa_config.allowed_authenticators, config.mfa_config.session_duration) == (
        ("totp", "biometrics"),
        24 * 3600,
    )
    mfa_staff = config.apps[1].policies[1]
    assert mfa_staff.mfa_config is not None
    assert (mfa_staff.mfa_config.allowed_authenticators, mfa_staff.mfa_config.session_duration) == (
        ("security_key",),
        12 * 3600,
    )
    engineers = admin.policies[1]
    assert (engineers.purpose_justification_required, engineers.purpose_justification_prompt) == (True, "Why?")


def test_the_report_names_what_is_approximated_and_ignored() -> None:
    _, report = convert(collect([FIXTURES / "api"]))
    assert "policy 'MFA staff': include: 'certificate' selector is not emulated; judged as never matching" in (
        report.approximated
    )
    assert (
        "policy 'MFA staff': exclude: 'okta' selector is not emulated; judged as never matching" in report.approximated
    )
    assert "group 'Managed laptops': can never match here, left out" in report.approximated
    assert "policy 'Managed only': can never match here, left out" in report.approximated
    assert "policy 'Allow engineers': purpose_justification_required: purpose justification is not emulated" not in (
        report.ignored
    )
    assert "app 'SaaS': type 'saas': only self_hosted apps are emulated; left out" in report.ignored
    assert "app 'Admin': logo_url: not emulated" in report.ignored
    assert "organisation: login_design: not emulated" in report.ignored
    assert "policy 'MFA staff': mfa_config: authenticator 'sms' is not emulated" in report.ignored


def test_bare_objects_and_the_envelope_read_alike(tmp_path: Path) -> None:
    for name in ("apps", "policies", "groups", "service_tokens", "organization"):
        data = json.loads((FIXTURES / "api" / f"{name}.json").read_text())
        bare = data["result"] if isinstance(data, dict) and "result" in data else data
        items = bare if isinstance(bare, list) else [bare]
        for i, item in enumerate(items):  # one object per file, named freely
            (tmp_path / f"{name}-{i}.json").write_text(json.dumps(item))
    enveloped, _ = convert(collect([FIXTURES / "api"]))
    loose, _ = convert(collect([tmp_path]))
    for cfg in (enveloped, loose):
        for token in cfg["service_tokens"]:
            token["client_secret"] = "generated"
    assert loose == enveloped


def test_the_cli_writes_an_owner_only_config_and_shows_secrets_once(tmp_path: Path) -> None:
    out = tmp_path / "fakeedge.yml"
    result = CliRunner().invoke(main, ["import", str(FIXTURES / "api"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    config = load_config(out)
    secret = config.service_tokens[0].client_secret
    assert secret.startswith("cfast_") and len(secret) == 54
    assert result.stdout.count(secret) == 1
    assert result.stdout.splitlines()[0] == f"fakeedge: wrote {out} (mode 0600)"
    assert yaml.safe_load(out.read_text())["apps"][0]["policies"][1] == {
        "id": "0b2f1c3e-1111-4a2b-9c3d-000000000002",
        "precedence": 1,
    }
    again = CliRunner().invoke(main, ["import", str(FIXTURES / "api"), "-o", str(out)])
    assert (again.exit_code, again.stderr) == (1, f"fakeedge: error: {out}: exists already; --force replaces it\n")
    assert load_config(out).service_tokens[0].client_secret == secret


@pytest.mark.parametrize(
    ("content", "name", "error"),
    [
        ("{", "bad.json", "not readable JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
        ('{"result": [{"foo": 1}]}', "odd.json", "item 0: not an Access app, policy, group, service token or organisation (keys: foo)"),
        ('{"success": false, "errors": [{"code": 10000}], "result": null}', "fail.json", 'the API answered success: false ([{"code": 10000}])'),
        ('resource "x" {', "bad.tf", None),
    ],
)  # fmt: skip
def test_unreadable_sources_are_one_line_errors(tmp_path: Path, content: str, name: str, error: str | None) -> None:
    (tmp_path / name).write_text(content)
    result = CliRunner().invoke(main, ["import", str(tmp_path / name), "-o", str(tmp_path / "out.yml")])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    prefix = f"fakeedge: error: {tmp_path / name}: "
    if error is None:
        assert result.stderr.startswith(prefix + "not valid HCL (")
    else:
        assert result.stderr == prefix + error + "\n"
    assert not (tmp_path / "out.yml").exists()


def test_interstitials_are_carried_over() -> None:
    cfg, report = convert(collect([FIXTURES / "api"]))
    office = next(p for p in cfg["policies"] if p["name"] == "From the office")
    assert (office["approval_required"], "approval_groups" in office) == (True, False)
    assert (
        "policy 'From the office': approval_groups: anyone who may call the control API approves (not the groups)"
        in (report.approximated)
    )
    engineers = next(p for p in cfg["policies"] if p["name"] == "Allow engineers")
    assert (engineers["purpose_justification_required"], engineers["purpose_justification_prompt"]) == (True, "Why?")
    assert not [line for line in report.ignored if "approval" in line or "justification" in line]
