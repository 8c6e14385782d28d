"""Issue 13: strict service-token authentication by default, secrets in rotation, disabled tokens (spec §14.3)."""

from __future__ import annotations

from typing import Any

import pytest

from fakeedge.config import parse_config
from fakeedge.errors import ConfigError
from fakeedge.testing import browser_login

from .conftest import BOT_ID, BOT_SECRET, OTHER_ID, OTHER_SECRET, MakeEdge, Origin, base_config

BOT = {"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": BOT_SECRET}
OLD_SECRET = "the-secret-before-the-rotation-0123"
NOW = 1_800_000_000  # 2027-01-15T08:00:00Z


def _strict_by_default(origin: Origin) -> dict[str, Any]:
    cfg = base_config(origin.url)
    del cfg["strict_service_token_auth"]  # as a new organisation has it: strict (spec §14.3)
    return cfg


def test_strict_is_the_default_and_legacy_one_setting_away() -> None:
    cfg: dict[str, Any] = {"team": "acme", "ingress": [{"service": "http_status:404"}]}
    assert parse_config(cfg, source="f.yml").strict_service_token_auth is True
    cfg["strict_service_token_auth"] = False
    assert parse_config(cfg, source="f.yml").strict_service_token_auth is False


async def test_strict_by_default_answers_401_403_and_ignores_the_cookie(make_edge: MakeEdge, origin: Origin) -> None:
    running = await make_edge(_strict_by_default(origin))
    admin, grafana = running.url("admin.acme.test"), running.url("grafana.acme.test")
    wrong = {"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": "wrong"}
    resp = await running.client.get(admin, headers=wrong, allow_redirects=False)
    assert resp.status == 401  # not the legacy 302 to the login
    assert resp.headers["cf-access-aud"] == running.aud("Admin")
    # a valid token on an app with only an Allow policy: authenticated, not authorised
    resp = await running.client.get(grafana, headers=BOT, allow_redirects=False)
    assert resp.status == 403 and "Set-Cookie" not in resp.headers
    assert '"status_code":403' in await resp.text()
    # a signed-in user's cookie plays no part once token headers are sent
    assert (await browser_login(running.client, admin, "alice@acme.test")).status == 200
    seen = len(origin.received)
    assert (await running.client.get(admin, headers=wrong, allow_redirects=False)).status == 401
    assert (await running.client.get(grafana, headers=BOT, allow_redirects=False)).status == 403
    assert len(origin.received) == seen
    resp = await running.client.get(admin, headers=BOT, allow_redirects=False)
    assert resp.status == 200 and "Set-Cookie" not in resp.headers
    assert origin.last.headers["Cf-Access-Jwt-Assertion"] != ""


async def test_legacy_mode_keeps_the_302_and_the_cookie(make_edge: MakeEdge, origin: Origin) -> None:
    running = await make_edge(base_config(origin.url))  # strict_service_token_auth: false
    admin = running.url("admin.acme.test")
    wrong = {"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": "wrong"}
    assert (await running.client.get(admin, headers=wrong, allow_redirects=False)).status == 302
    resp = await running.client.get(admin, headers=BOT, allow_redirects=False)
    assert resp.status == 200 and resp.headers["Set-Cookie"].startswith("CF_Authorization=")


def _rotated(origin: Origin, **token: Any) -> dict[str, Any]:
    cfg = _strict_by_default(origin)
    cfg["service_tokens"][0] |= token
    return cfg


async def test_a_rotated_secret_works_until_its_own_expiry(make_edge: MakeEdge, origin: Origin) -> None:
    from fakeedge.clock import Clock

    clock = Clock()
    clock.freeze(NOW)
    cfg = _rotated(
        origin,
        previous_client_secrets=[
            {"client_secret": OLD_SECRET, "expires_at": "2027-01-15T09:00:00Z"},
            {"client_secret": "older-still-0123456789", "expires_at": "2027-01-15T07:00:00Z"},
        ],
    )
    running = await make_edge(cfg, clock=clock)
    url = running.url("admin.acme.test")
    old = {"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": OLD_SECRET}
    older = {"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": "older-still-0123456789"}
    assert (await running.client.get(url, headers=BOT, allow_redirects=False)).status == 200
    assert (await running.client.get(url, headers=old, allow_redirects=False)).status == 200  # in its grace
    assert (await running.client.get(url, headers=older, allow_redirects=False)).status == 401  # its grace ended
    clock.advance(3600)
    assert (await running.client.get(url, headers=old, allow_redirects=False)).status == 401
    assert (await running.client.get(url, headers=BOT, allow_redirects=False)).status == 200


@pytest.mark.parametrize(
    ("token", "status"),
    [
        ({"disabled": True}, 401),
        ({"expires_at": "2027-01-15T07:59:59Z"}, 401),
        ({"expires_at": "2027-01-15T08:00:01Z"}, 200),
        ({"disabled": False}, 200),
    ],
)
async def test_disabled_and_expired_tokens_cannot_authenticate(
    make_edge: MakeEdge, origin: Origin, token: dict[str, Any], status: int
) -> None:
    from fakeedge.clock import Clock

    clock = Clock()
    clock.freeze(NOW)
    grace = {"previous_client_secrets": [{"client_secret": OLD_SECRET, "expires_at": "2027-01-16T00:00:00Z"}]}
    running = await make_edge(_rotated(origin, **token, **grace), clock=clock)
    url = running.url("sentry.acme.test")
    old = {"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": OLD_SECRET}
    for headers in (BOT, old):  # a disabled token's old secret in grace neither (spec §14.3)
        assert (await running.client.get(url, headers=headers, allow_redirects=False)).status == status
    other = {"CF-Access-Client-Id": OTHER_ID, "CF-Access-Client-Secret": OTHER_SECRET}
    assert (await running.client.get(url, headers=other, allow_redirects=False)).status == 403


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (
            {"previous_client_secrets": [{"client_secret": "x"}]},
            "f.yml: service_tokens[0].previous_client_secrets[0].expires_at: is required: a rotated secret works until its grace ends (spec §14.3)",
        ),
        (
            {"expires_at": "tomorrow"},
            "f.yml: service_tokens[0].expires_at: expected an RFC 3339 time such as 2026-12-01T00:00:00Z, got 'tomorrow'",
        ),
        (
            {"expires_at": "2027-01-15"},
            "f.yml: service_tokens[0].expires_at: expected an RFC 3339 time such as 2026-12-01T00:00:00Z, got '2027-01-15'",
        ),
        ({"disabled": "yes"}, "f.yml: service_tokens[0].disabled: expected true or false, got str 'yes'"),
    ],
)
def test_service_token_mistakes_are_one_line(token: dict[str, Any], message: str) -> None:
    cfg = base_config("http://127.0.0.1:9")
    cfg["service_tokens"][0] |= token
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, source="f.yml")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("strict", "host", "expected"),
    [
        (
            True,
            "grafana.acme.test",
            "outcome   403: strict service-token auth, no Service Auth policy admits this token",
        ),
        (
            False,
            "grafana.acme.test",
            "outcome   302 to the team domain's login (401 with X-Requested-With: XMLHttpRequest)",
        ),
        (True, "sentry.acme.test", "outcome   admit via Service Auth: the origin gets the service-token assertion"),
    ],
)
def test_explain_knows_strict_mode(strict: bool, host: str, expected: str) -> None:
    from fakeedge.explain import explain

    cfg = base_config("http://127.0.0.1:9") | {"strict_service_token_auth": strict}
    lines = explain(parse_config(cfg, source="f.yml"), f"http://{host}/", service_token="ci-deploy-bot")
    assert lines[-1] == expected
