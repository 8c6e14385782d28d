"""The pure side of managed OAuth: its configuration, PKCE, redirect-URI rules and bounded store."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from fakeedge import oauth
from fakeedge.config import DynamicClientRegistration, OAuthConfiguration, parse_config
from fakeedge.errors import ConfigError
from fakeedge.policy import Identity


def _config(oauth_configuration: Any) -> dict[str, Any]:
    return {
        "team": "acme",
        "apps": [
            {
                "name": "Tools",
                "domain": "mcp.acme.test",
                "policies": [{"name": "all", "decision": "allow", "include": [{"everyone": {}}]}],
                "oauth_configuration": oauth_configuration,
            }
        ],
    }


def test_oauth_configuration_with_cloudflares_names() -> None:
    cfg = parse_config(
        _config(
            {
                "enabled": True,
                "dynamic_client_registration": {
                    "enabled": True,
                    "allow_any_on_localhost": True,
                    "allow_any_on_loopback": True,
                    "allowed_uris": ["https://app.example.com/oauth/*", "cursor://anysphere.cursor-mcp/oauth/callback"],
                },
                "grant": {"access_token_lifetime": "5m", "session_duration": "24h"},
            }
        )
    )
    assert cfg.apps[0].oauth_configuration == OAuthConfiguration(
        enabled=True,
        dynamic_client_registration=DynamicClientRegistration(
            enabled=True,
            allow_any_on_localhost=True,
            allow_any_on_loopback=True,
            allowed_uris=("https://app.example.com/oauth/*", "cursor://anysphere.cursor-mcp/oauth/callback"),
        ),
        access_token_lifetime=300,
        session_duration=86400,
    )


def test_oauth_configuration_defaults() -> None:
    assert parse_config(_config({})).apps[0].oauth_configuration == OAuthConfiguration(
        enabled=False,
        dynamic_client_registration=DynamicClientRegistration(True, False, False, ()),
        access_token_lifetime=900,  # spec §14.2: 15 minutes
        session_duration=None,  # the app's session_duration
    )
    assert parse_config(_config(None)).apps[0].oauth_configuration is None


PREFIX = "f.yml: apps[0].oauth_configuration"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"enable": True},
            f"{PREFIX}.enable: unknown key 'enable'; did you mean 'enabled'? valid: enabled, "
            "dynamic_client_registration, grant",
        ),
        ({"enabled": "yes"}, f"{PREFIX}.enabled: expected true or false, got str 'yes'"),
        (
            {"dynamic_client_registration": {"allowed_uris": ["https://app.example.com/cb*"]}},
            f"{PREFIX}.dynamic_client_registration.allowed_uris[0]: a wildcard is only allowed as a final /*, "
            "got 'https://app.example.com/cb*'",
        ),
        (
            {"dynamic_client_registration": {"allowed_uris": ["myapp://cb/*"]}},
            f"{PREFIX}.dynamic_client_registration.allowed_uris[0]: a custom-scheme URI cannot contain wildcards, "
            "got 'myapp://cb/*'",
        ),
        (
            {"dynamic_client_registration": {"allowed_uris": ["myapp://me@cb"]}},
            f"{PREFIX}.dynamic_client_registration.allowed_uris[0]: a custom-scheme URI cannot contain "
            "credentials, got 'myapp://me@cb'",
        ),
        (
            {"dynamic_client_registration": {"allowed_uris": ["https://app.example.com/#x"]}},
            f"{PREFIX}.dynamic_client_registration.allowed_uris[0]: a redirect URI cannot contain a fragment, "
            "got 'https://app.example.com/#x'",
        ),
        (
            {"dynamic_client_registration": {"allowed_uris": ["/callback"]}},
            f"{PREFIX}.dynamic_client_registration.allowed_uris[0]: expected an absolute URI such as "
            "https://app.example.com/callback or myapp://callback, got '/callback'",
        ),
        (
            {"grant": {"access_token_lifetime": "0"}},
            f"{PREFIX}.grant.access_token_lifetime: expected a positive duration, got '0'",
        ),
        (
            {"grant": {"session_duration": "forever"}},
            f"{PREFIX}.grant.session_duration: expected a duration such as 30s, 15m or 24h, got 'forever'",
        ),
    ],
    ids=["unknown-key", "flag", "inner-wildcard", "custom-wildcard", "credentials", "fragment", "relative",
         "zero-lifetime", "bad-duration"],
)  # fmt: skip
def test_oauth_configuration_errors(value: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(value), source="f.yml")
    assert str(info.value) == message


def test_pkce_s256_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert oauth.pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert not oauth.pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN")
    assert not oauth.pkce_matches(verifier[:42], "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")  # too short
    assert not oauth.pkce_matches(verifier + "!", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")


def test_stores_are_bounded_and_codes_single_use() -> None:
    store = oauth.OAuthStore()
    for _ in range(oauth.CLIENT_LIMIT + 5):
        store.register("a" * 64, ("http://127.0.0.1/cb",), "none", 0)
    assert len(store.clients) == oauth.CLIENT_LIMIT
    who = Identity(email="alice@acme.test", name="Alice", country="US")
    code = oauth.Code("c", "a" * 64, "http://127.0.0.1/cb", "x" * 43, None, "n", who, expires=100)
    values = [store.add_code(code, 0) for _ in range(oauth.CODE_LIMIT + 5)]
    assert len(store.codes) == oauth.CODE_LIMIT
    assert store.take_code(values[0], 0) == (None, False)  # evicted: the oldest go first
    assert store.take_code(values[-1], 0) == (code, False)
    assert store.take_code(values[-1], 0) == (None, True)  # replay
    assert store.take_code(values[-2], 100) == (None, False)  # expired
    # nothing is stored that a client could present
    assert values[-3] not in store.codes and oauth.digest(values[-3]) in store.codes


def test_pure() -> None:
    code = "import sys, fakeedge.oauth; assert 'aiohttp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
