"""``fakeedge explain --all``: one URL judged for no credentials, every persona and every service token."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fakeedge.cli import main
from fakeedge.config import parse_config
from fakeedge.explain import judge, judge_all, rule_text

from .conftest import BOT_ID, base_config


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    cfg = base_config("http://127.0.0.1:9")
    cfg["apps"][0]["policies"].insert(
        0, {"name": "no-mallory", "decision": "deny", "include": [{"email": {"email": "mallory@evil.test"}}]}
    )
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_table_says_who_gets_in_and_by_which_policy(config_file: Path) -> None:
    result = CliRunner().invoke(main, ["explain", "--config", str(config_file), "https://admin.acme.test/x", "--all"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "caller                       in   policy      decision  why",
        "no credentials               no   staff       login     not signed in: Allow policy 'staff' needs a login",
        "alice@acme.test              yes  staff       allow     Allow policy 'staff' matched email_domain acme.test",
        "bob@acme.test                yes  staff       allow     Allow policy 'staff' matched email_domain acme.test",
        "octo@github.test             yes  staff       allow     Allow policy 'staff' matched github-organization acme",
        "mallory@evil.test            no   no-mallory  deny      Block policy 'no-mallory' matched email mallory@evil.test",
        f"service token ci-deploy-bot  yes  bots        service   Service Auth policy 'bots' matched service_token {BOT_ID}",
        "service token other-bot      no   staff       login     not signed in: Allow policy 'staff' needs a login",
    ]


def test_all_excludes_a_single_caller(config_file: Path) -> None:
    result = CliRunner().invoke(
        main, ["explain", "--config", str(config_file), "https://admin.acme.test/", "--all", "--email", "a@acme.test"]
    )
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "Error: --all judges every persona and service token; give no --email or --service-token"
    )


def test_a_url_without_an_app_is_proxied_for_everyone(tmp_path: Path) -> None:
    config = parse_config(base_config("http://127.0.0.1:9"), base_dir=tmp_path)
    rows = judge_all(config, "https://public.acme.test/")
    assert len(rows) == 1 + len(config.users) + len(config.service_tokens)
    assert {(r.app, r.outcome, r.admitted) for r in rows} == {(None, "none", True)}


@pytest.mark.parametrize(
    ("url", "caller", "reason"),
    [
        (
            "https://sentry.acme.test/",
            {},
            f"no policy can admit this request: Service Auth policy 'bots': no include rule matched "
            f"(service_token {BOT_ID})",
        ),
        (
            "https://grafana.acme.test/",
            {"email": "octo@github.test"},
            "no policy admits octo@github.test: Allow policy 'staff': no include rule matched (email_domain acme.test)",
        ),
    ],
    ids=["forbidden", "deny-by-default"],
)
def test_the_reason_names_the_rules_that_failed(tmp_path: Path, url: str, caller: dict[str, str], reason: str) -> None:
    config = parse_config(base_config("http://127.0.0.1:9"), base_dir=tmp_path)
    judgement = judge(config, url, **caller)
    assert judgement.reason == reason
    assert f"why       {reason}" in judgement.lines


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        (
            "bob@acme.test",
            "no policy admits bob@acme.test: Allow policy 'uk-staff': require geo GB failed",
        ),
        (
            "alice@acme.test",
            "no policy admits alice@acme.test: Allow policy 'uk-staff': exclude email alice@acme.test matched",
        ),
    ],
    ids=["require", "exclude"],
)
def test_the_reason_names_a_failed_require_or_a_matching_exclude(tmp_path: Path, email: str, reason: str) -> None:
    cfg = base_config("http://127.0.0.1:9")
    cfg["apps"][2]["policies"] = [
        {
            "name": "uk-staff",
            "decision": "allow",
            "include": [{"email_domain": {"domain": "acme.test"}}],
            "require": [{"geo": {"country_code": "GB"}}],
            "exclude": [{"email": {"email": "alice@acme.test"}}],
        }
    ]
    config = parse_config(cfg, base_dir=tmp_path)
    assert judge(config, "https://grafana.acme.test/", email=email).reason == reason


def test_a_rule_limited_to_an_identity_provider_says_which() -> None:
    cfg = base_config("http://127.0.0.1:9")
    cfg["apps"][0]["policies"] = [
        {
            "name": "gh",
            "decision": "allow",
            "include": [{"github-organization": {"name": "acme", "identity_provider_id": "github"}}],
        }
    ]
    (rule,) = parse_config(cfg).apps[0].policies[0].include
    assert rule_text(rule) == "github-organization acme via github"
