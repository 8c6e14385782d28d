"""Issue 13: independent MFA after the IdP step (spec §14.5): where it applies, which amr skips it, how long it lasts."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from fakeedge.clock import Clock
from fakeedge.config import parse_config
from fakeedge.errors import ConfigError
from fakeedge.testing import loopback_session

from .conftest import MakeEdge, Origin, base_config
from .test_today_justification import _follow, _post

BUTTONS = re.compile(r'name="mfa" value="([a-z_]+)"')


def _cfg(origin: Origin, **org: Any) -> dict[str, Any]:
    cfg = base_config(origin.url) | {"mfa_required_for_all_apps": True} | org
    cfg["users"].append({"email": "keyholder@acme.test", "amr": ["pwd", "hwk"]})
    return cfg


async def _sign_in(client: aiohttp.ClientSession, url: str, email: str) -> aiohttp.ClientResponse:
    login = await _follow(client, await client.get(url, allow_redirects=False))
    return await _post(client, login, email=email)


async def test_mfa_after_the_idp_then_for_its_session_duration(make_edge: MakeEdge, origin: Origin) -> None:
    clock = Clock()
    clock.freeze(1_800_000_000)
    running = await make_edge(_cfg(origin, mfa_config={"session_duration": "30m"}), clock=clock)
    client = running.client
    url = running.url("admin.acme.test", "/x")
    asked = await _sign_in(client, url, "alice@acme.test")
    assert asked.status == 200
    assert BUTTONS.findall(await asked.text()) == ["totp", "biometrics", "security_key"]
    assert origin.received == []
    assert running.edge.recorder is not None
    assert [r for r in running.edge.recorder.all()][-1].reason == (
        "'Admin' needs MFA (mfa_config): the fake authenticator page, before the app"
    )
    done = await _follow(client, await _post(client, asked, mfa="totp"))
    assert done.status == 200 and len(origin.received) == 1
    # within the MFA session: a silent sign-in asks nothing
    client.cookie_jar.clear_domain("admin.acme.test")
    assert (await _follow(client, await client.get(url, allow_redirects=False))).status == 200
    # past it (the team-domain session lives on): the authenticator again
    clock.advance(31 * 60)
    client.cookie_jar.clear_domain("admin.acme.test")
    again = await _follow(client, await client.get(url, allow_redirects=False))
    assert again.status == 200 and BUTTONS.findall(await again.text())
    assert len(origin.received) == 2


@pytest.mark.parametrize(
    ("email", "change", "asked"),
    [
        ("keyholder@acme.test", {}, False),  # amr hwk: the IdP's factor counts (spec §14.5)
        ("alice@acme.test", {}, True),  # amr pwd does not
        ("alice@acme.test", {"app": {"mfa_disabled": True}}, False),  # the app opts out
        ("alice@acme.test", {"org": False, "app": {}}, True),  # the app asks, the organisation does not
        ("alice@acme.test", {"org": False}, False),  # nobody asks
        ("alice@acme.test", {"app": {"mfa_disabled": True}, "policy": {}}, True),  # the policy over the app
    ],
)
async def test_where_mfa_applies(
    make_edge: MakeEdge, origin: Origin, email: str, change: dict[str, Any], asked: bool
) -> None:
    cfg = _cfg(origin)
    if change.get("org") is False:
        cfg["mfa_required_for_all_apps"] = False
    if "app" in change:
        cfg["apps"][0]["mfa_config"] = change["app"]
    if "policy" in change:
        cfg["apps"][0]["policies"][0]["mfa_config"] = change["policy"]
    running = await make_edge(cfg)
    resp = await _sign_in(running.client, running.url("admin.acme.test", "/x"), email)
    if asked:
        assert resp.status == 200 and BUTTONS.findall(await resp.text())
    else:
        assert resp.status == 302 and "/cdn-cgi/access/authorized?nonce=" in resp.headers["Location"]


async def test_only_allowed_authenticators_pass(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = _cfg(origin)
    cfg["apps"][0]["policies"][0]["mfa_config"] = {"allowed_authenticators": ["security_key"]}
    running = await make_edge(cfg)
    asked = await _sign_in(running.client, running.url("admin.acme.test", "/x"), "alice@acme.test")
    assert BUTTONS.findall(await asked.text()) == ["security_key"]
    refused = await _post(running.client, asked, mfa="totp")
    assert refused.status == 200 and origin.received == []
    done = await _follow(running.client, await _post(running.client, asked, mfa="security_key"))
    assert done.status == 200 and len(origin.received) == 1
    async with loopback_session() as other:  # no signed-in session: no MFA to pass
        forged = await other.post(asked.url, data={"csrf": "x", "mfa": "totp"}, allow_redirects=False)
        assert forged.status == 400


def test_mfa_config_mistakes_are_one_line() -> None:
    cfg = base_config("http://127.0.0.1:9") | {"mfa_config": {"allowed_authenticators": ["sms"]}}
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, source="f.yml")
    assert str(info.value) == (
        "f.yml: mfa_config.allowed_authenticators[0]: unknown authenticator 'sms'; valid: totp, biometrics, security_key"
    )
    cfg = base_config("http://127.0.0.1:9") | {"mfa_config": {"mfa_disabled": True}}
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, source="f.yml")
    assert str(info.value).startswith("f.yml: mfa_config.mfa_disabled: unknown key")
