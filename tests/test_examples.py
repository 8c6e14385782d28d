"""The example configs load, and each reproduces its team's setup (checked with explain)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakeedge.config import load_config
from fakeedge.explain import explain

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _outcome(name: str, url: str, **kw: str) -> str:
    lines = explain(load_config(EXAMPLES / name), url, **kw)
    return lines[-1].removeprefix("outcome   ")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yml")), ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    assert load_config(path).apps


@pytest.mark.parametrize(
    ("name", "url", "caller", "outcome"),
    [
        (
            "internal-tools.yml",
            "http://sentry.localhost/api/1/envelope/",
            {"service_token": "sentry-relay"},
            "admit via Service Auth",
        ),
        ("internal-tools.yml", "http://sentry.localhost/api/1/envelope/", {}, "302 to the team domain's login"),
        (
            "internal-tools.yml",
            "http://grafana.localhost/",
            {"email": "contractor@gmail.test"},
            "admit: the origin gets",
        ),
        ("internal-tools.yml", "http://grafana.localhost/", {"email": "someone@gmail.test"}, "403 block page"),
        ("tunnel-admin-api.yml", "http://app.localhost/api/x", {}, "proxied without Access"),
        ("tunnel-admin-api.yml", "http://admin.localhost/api/x", {"email": "outsider@gmail.test"}, "403 block page"),
        (
            "tunnel-admin-api.yml",
            "http://admin.localhost/api/x",
            {"service_token": "ops-bot"},
            "admit via Service Auth",
        ),
        (
            "admin-sso.yml",
            "http://admin.localhost/api/access-sso",
            {"email": "staff@acme.test"},
            "admit: the origin gets",
        ),
        (
            "dev-previews.yml",
            "https://pr-12-dev.securityv0.test/",
            {"service_token": "visual-review-bot"},
            "admit via Service Auth",
        ),
        (
            "dev-previews.yml",
            "https://pr-12-dev.securityv0.test/",
            {"service_token": "ci-deploy-bot"},
            "302 to the team domain's login",
        ),
        ("dev-previews.yml", "https://a.b.securityv0.test/", {}, "proxied without Access"),
        ("dev-previews.yml", "https://app.securityv0.test/", {}, "bypass: proxied with no assertion"),
        ("dev-previews.yml", "https://dev.securityv0.test/", {"email": "dev@github.test"}, "admit: the origin gets"),
    ],
)
def test_examples_reproduce_their_setups(name: str, url: str, caller: dict[str, str], outcome: str) -> None:
    assert _outcome(name, url, **caller).startswith(outcome)
