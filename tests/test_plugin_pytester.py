"""The plugin as users meet it: their test files, run by a fresh pytest that loads it from the entry point."""

from __future__ import annotations

import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]

CONFIG = """
import asyncio

import jwt
import pytest
from aiohttp import web


async def whoami(request):
    return web.json_response({"email": request.headers.get("Cf-Access-Authenticated-User-Email")})


def config():
    app = web.Application()
    app.router.add_get("/{tail:.*}", whoami)
    return {
        "team": "acme",
        "users": [{"email": "alice@acme.test", "name": "Alice"}],
        "service_tokens": [
            {"name": "ci", "client_id": "0123456789abcdef0123456789abcdef.access", "client_secret": "s3cret-s3cret"}
        ],
        "apps": [
            {
                "name": "Admin",
                "domain": "admin.acme.test",
                "policies": [
                    {"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]},
                    {"name": "ci", "decision": "non_identity", "include": [{"service_token": {"token_id": "ci"}}]},
                ],
            }
        ],
        "ingress": [{"hostname": "admin.acme.test", "service": app}, {"service": "http_status:404"}],
    }
"""

USER_TESTS = """
async def test_signed_in(fakeedge):
    edge = await fakeedge(config=config())
    client = await edge.login(email="alice@acme.test", app="Admin")
    async with client.get(edge.url("Admin", "/me")) as resp:
        assert resp.status == 200
        assert (await resp.json())["email"] == "alice@acme.test"
    assert edge.requests.last.policy == "staff"


async def test_service_token_and_a_bad_token(fakeedge):
    edge = await fakeedge(config=config())
    async with edge.client().get(edge.url("Admin"), headers=edge.service_token("ci")) as resp:
        assert resp.status == 200
    token = edge.mint(app="Admin", email="alice@acme.test", variant="expired")

    def origin_check():
        key = jwt.PyJWKClient(edge.certs_url).get_signing_key_from_jwt(token)
        jwt.decode(token, key.key, algorithms=["RS256"], audience=edge.aud("Admin"), issuer=edge.team_domain)

    with pytest.raises(jwt.ExpiredSignatureError):
        await asyncio.to_thread(origin_check)
"""

MISUSE = """
async def test_unknown_app(fakeedge):
    edge = await fakeedge(config=config())
    edge.url("Admn")


async def test_refused_login(fakeedge):
    edge = await fakeedge(config=config())
    await edge.login(email="mallory@evil.test", app="Admin")
"""


def write(pytester: pytest.Pytester, tests: str, mode: str = "auto") -> None:
    pytester.makeini(
        f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    pytester.makepyfile(test_user=textwrap.dedent(CONFIG) + textwrap.dedent(tests))


def test_a_user_test_file_passes(pytester: pytest.Pytester) -> None:
    write(pytester, USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_it_works_in_strict_asyncio_mode(pytester: pytest.Pytester) -> None:
    marked = USER_TESTS.replace("async def test_", "@pytest.mark.asyncio\nasync def test_")
    write(pytester, marked, mode="strict")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_misuse_fails_with_a_clear_message(pytester: pytest.Pytester) -> None:
    write(pytester, MISUSE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "E *fakeedge.errors.UnknownName: no app named 'Admn'; did you mean 'Admin'? apps: Admin "
            "(or pass a host name such as admin.acme.test)",
            "E *fakeedge.testing.LoginRefused: app 'Admin' refused mallory@evil.test at sign-in (403): "
            "no Allow policy includes this identity; policies: staff (allow), ci (non_identity)",
        ]
    )


def test_without_the_pytest_extra_the_fixture_says_what_to_install(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as if pytest-asyncio were not installed: autoload off (its entry point is not loaded), fakeedge's
    # plugin loaded by name, and an import of pytest_asyncio that fails
    shadow = pytester.mkdir("shadow")
    (shadow / "pytest_asyncio.py").write_text("raise ImportError(\"No module named 'pytest_asyncio'\")\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(
        test_user="""
        def test_other():
            pass

        def test_edge(fakeedge):
            pass
        """
    )
    result = pytester.run(
        sys.executable, "-m", "pytest", "-p", "fakeedge.pytest_plugin", "-p", "no:cacheprovider", "-rA"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "_* ERROR at setup of test_edge _*",
            "the fakeedge fixture needs pytest-asyncio: pip install pytest-aiohttp",
        ]
    )
