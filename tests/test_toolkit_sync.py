"""The sync toolkit as users meet it: plain sync test files, unittest, shared edges reset between tests."""

from __future__ import annotations

import re
import ssl
import sys
import textwrap
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from fakeedge.errors import FakeEdgeError, UnknownName
from fakeedge.testing import allow, one_app
from fakeedge.testing_sync import SyncEdgeFactory, start_edge

pytest_plugins = ["pytester"]

ORIGIN = """
import jwt
from flask import Flask, jsonify, request


def make_origin(edge):
    app = Flask("origin")
    jwks = jwt.PyJWKClient(edge.certs_url, cooldown_duration=0)

    @app.get("/me")
    def me():
        token = request.headers.get("Cf-Access-Jwt-Assertion", "")
        try:
            key = jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=edge.aud("App"), issuer=edge.team_domain)
        except jwt.PyJWTError as exc:
            return jsonify(error=str(exc)), 401
        return jsonify(email=claims["email"])

    return app
"""

PLAIN = """
from fakeedge.testing import one_app


def test_signed_in(fakeedge_sync):
    edge = fakeedge_sync(one_app(make_origin, "alice@acme.test"))
    session = edge.login("alice@acme.test")
    assert session.get(edge.url("App", "/me")).json() == {"email": "alice@acme.test"}
    assert edge.requests.last.email == "alice@acme.test"


def test_not_signed_in(fakeedge_sync):
    edge = fakeedge_sync(one_app(make_origin, "alice@acme.test"))
    import requests
    assert requests.get(edge.origin_url("App", "/me")).status_code == 401
"""

UNITTEST = """
import unittest

from fakeedge.testing import one_app
from fakeedge.testing_sync import start_edge


class AccessTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.edge = start_edge(one_app(make_origin, "@acme.test"))
        cls.addClassCleanup(cls.edge.close)

    def tearDown(self):
        self.edge.reset()

    def test_signed_in(self):
        with self.edge.login("bob@acme.test") as session:
            self.assertEqual(session.get(self.edge.url("App", "/me")).json(), {"email": "bob@acme.test"})
        self.assertEqual(len(self.edge.requests), 1)

    def test_reset_left_nothing(self):
        self.assertEqual(len(self.edge.requests), 0)
        self.edge.clock.advance(3600)


if __name__ == "__main__":
    unittest.main()
"""

SHARED = """
import pytest
import requests

from fakeedge.testing import one_app

STARTS = []


@pytest.fixture(scope="{scope}")
def edge(fakeedge_sync_{scope}):
    STARTS.append(1)
    return fakeedge_sync_{scope}(one_app(make_origin, "alice@acme.test"))


def test_a_sign_in_rotation_and_a_frozen_clock(edge):
    session = edge.login("alice@acme.test")
    assert session.get(edge.url("App", "/me")).status_code == 200
    kids = [key["kid"] for key in requests.get(edge.certs_url).json()["keys"]]
    edge.rotate_keys()
    edge.clock.freeze(0)
    pytest.shared = (session, edge.mint(email="alice@acme.test"), kids)


def test_the_next_test_finds_it_as_it_started(edge):
    session, token, kids = pytest.shared
    assert len(STARTS) == 1  # one edge for both tests
    assert len(edge.requests) == 0
    assert not edge.clock.frozen
    # sessions ended: the old cookies and the minted token no longer pass
    assert session.get(edge.url("App", "/me"), allow_redirects=False).status_code in (302, 404)
    resp = requests.get(f"http://127.0.0.1:{{edge.port}}/me", headers={{"Host": edge.host("App"), "Cf-Access-Token": token}}, allow_redirects=False)
    assert resp.status_code == 302
    # the keys of the start in certs again (the standby key and the current one, spec §14.7)
    assert [key["kid"] for key in requests.get(edge.certs_url).json()["keys"]] == kids
"""


def write(pytester: pytest.Pytester, **files: str) -> None:
    # the option is pytest-asyncio's (installed here): unset, it warns in every run, sync or not
    pytester.makeini("[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(**{name: textwrap.dedent(ORIGIN) + textwrap.dedent(body) for name, body in files.items()})


def test_the_sync_fixture_in_a_plain_sync_test_file(pytester: pytest.Pytester) -> None:
    write(pytester, test_user=PLAIN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_unittest_test_case_run_by_unittest(pytester: pytest.Pytester) -> None:
    write(pytester, test_user=UNITTEST)
    result = pytester.run(sys.executable, "-W", "error", "test_user.py", "-v")
    assert result.ret == 0, result.stderr.str()
    result.stderr.fnmatch_lines(["test_reset_left_nothing * ok", "test_signed_in * ok", "Ran 2 tests*", "OK"])


@pytest.mark.parametrize("scope", ["module", "session"])
def test_a_shared_edge_is_reset_between_tests(pytester: pytest.Pytester, scope: str) -> None:
    write(pytester, test_user=SHARED.format(scope=scope))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_without_the_reset_the_second_test_sees_the_first(pytester: pytest.Pytester) -> None:
    # the check above can fail: a module-scoped fixture of the user's own keeps the state
    own = SHARED.format(scope="module").replace(
        "def edge(fakeedge_sync_module):\n    STARTS.append(1)\n    return fakeedge_sync_module(",
        "def edge():\n    from fakeedge.testing_sync import start_edge\n    STARTS.append(1)\n    with start_edge(",
    )
    own = own.replace(
        'one_app(make_origin, "alice@acme.test"))\n',
        'one_app(make_origin, "alice@acme.test")) as e:\n        yield e\n',
        1,
    )
    write(pytester, test_user=own)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*assert len(edge.requests) == 0*"])


def test_a_sync_test_that_asks_for_the_async_fixture_is_told_what_to_do(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    pytester.makepyfile(
        test_user="""
        from fakeedge.testing import one_app

        def test_sync(fakeedge):
            edge = fakeedge(config=one_app("http://127.0.0.1:9", "alice@acme.test"))
            edge.url("App")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E *AttributeError: fakeedge(config=...) starts the edge asynchronously: `edge = await "
            "fakeedge(config=...)` in an async test; a sync test (Flask, Django, unittest) uses the "
            "fakeedge_sync fixture: `edge = fakeedge_sync(config)` (asked for .url)"
        ]
    )


def test_the_guides_flask_example_passes(pytester: pytest.Pytester) -> None:
    guide = (Path(__file__).parent.parent / "docs" / "testing.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```python\n(# test_flask_app\.py\n.*?)```", guide, re.S)
    pytester.makeini("[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_flask_app=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_compact_config_is_the_long_one() -> None:
    assert one_app("http://127.0.0.1:3000", "alice@acme.test", "@corp.test", host="admin.acme.test", name="Admin") == {
        "team": "acme",
        "apps": [
            {
                "name": "Admin",
                "domain": "admin.acme.test",
                "policies": [
                    {
                        "name": "allow",
                        "decision": "allow",
                        "include": [{"email": {"email": "alice@acme.test"}}, {"email_domain": {"domain": "corp.test"}}],
                    }
                ],
            }
        ],
        "ingress": [
            {"hostname": "admin.acme.test", "service": "http://127.0.0.1:3000"},
            {"service": "http_status:404"},
        ],
    }
    assert allow(everyone=True) == {"name": "allow", "decision": "allow", "include": [{"everyone": {}}]}
    with pytest.raises(ValueError) as exc:
        allow()
    assert str(exc.value) == "allow(): give at least one address, @domain, email_domains=... or everyone=True"


def test_a_service_token_in_one_line() -> None:
    def no_content(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("204 No Content", [])
        return []

    with start_edge(one_app(no_content, service_token="ci")) as edge:
        session = _plain_session()
        resp = session.get(
            f"http://127.0.0.1:{edge.port}/", headers={"Host": "app.acme.test", **edge.service_token("ci")}
        )
        assert resp.status_code == 204
        claims = edge.requests.last.claims
        assert claims is not None and claims["common_name"] == edge.config.service_tokens[0].client_id


def test_members_of_the_sync_edge() -> None:
    with SyncEdgeFactory() as start, start_edge(one_app("http_status:204", "alice@acme.test")) as other:
        edge = start(one_app("http_status:204", "alice@acme.test"))
        assert edge.port != other.port
        assert edge.url("App", "/x") == f"http://app.acme.test:{edge.port}/x"
        assert edge.team_domain == f"http://127.0.0.1:{edge.port}"
        assert edge.certs_url == f"{edge.team_domain}/cdn-cgi/access/certs"
        with edge.client() as anonymous:
            resp = anonymous.get(edge.url("App", "/x"), allow_redirects=False)
            assert (resp.status_code, resp.headers["Location"].split("?")[0]) == (
                302,
                f"{edge.team_domain}/cdn-cgi/access/login/app.acme.test:{edge.port}",
            )
        with edge.client("httpx") as anonymous_httpx:
            assert anonymous_httpx.get(edge.url("App", "/x")).status_code == 302
        cookies = edge.login("alice@acme.test", client="cookies")
        assert list(cookies) == ["CF_Authorization"]
        claims = jwt.decode(cookies["CF_Authorization"], options={"verify_signature": False})
        assert (claims["email"], claims["aud"]) == ("alice@acme.test", [edge.aud("App")])
        with pytest.raises(UnknownName):
            edge.url("Ap")
        with pytest.raises(ValueError) as exc:
            edge.origin_url("App")
        assert str(exc.value) == "app.acme.test/ is routed to http_status:204, not to an origin"
        state = edge.storage_state("alice@acme.test")
        names = sorted((c["name"], c["domain"]) for c in state["cookies"])
        assert names == [
            ("CF_Authorization", "127.0.0.1"),
            ("CF_Authorization", "app.acme.test"),
            ("CF_Session", "127.0.0.1"),
        ]
    with pytest.raises(RuntimeError) as closed:
        edge.rotate_keys()
    assert str(closed.value) == "this edge is closed"


def _plain_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def _assertion(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(environ.get("HTTP_CF_ACCESS_JWT_ASSERTION", "")).encode()]


def test_a_tls_edge_under_the_real_team_domain_from_sync_clients() -> None:
    """``tls_listen`` with the real team domain (spec §10): the sync edge's clients, requests and
    httpx, trust its CA only and send port 443 to its TLS port, as the async edge's do; the
    assertion verifies against the certs fetched from ``https://acme.cloudflareaccess.com``."""
    team = "https://acme.cloudflareaccess.com"
    config = one_app(_assertion, "alice@acme.test", team_domain=team, tls_listen="127.0.0.1:0")
    with start_edge(config) as edge:
        assert edge.tls_port is not None and edge.ca is not None and edge.ca.cert_path.is_file()
        assert edge.certs_url == f"{team}/cdn-cgi/access/certs"
        assert edge.ssl_context().verify_mode == ssl.CERT_REQUIRED
        with edge.client() as anonymous:
            keys = anonymous.get(edge.certs_url).json()  # https, port 443 -> the TLS port, the CA trusted
        jwks = jwt.PyJWKSet.from_dict(keys)
        for kind in ("requests", "httpx"):
            with edge.login("alice@acme.test", client=kind) as client:
                resp = client.get("https://app.acme.test/who")
                assert resp.status_code == 200, kind
                token = resp.text
            kid = jwt.get_unverified_header(token)["kid"]
            claims = jwt.decode(token, jwks[kid].key, algorithms=["RS256"], audience=edge.aud("App"), issuer=team)
            assert claims["email"] == "alice@acme.test", kind
        # a client that trusts the system's CAs only is refused the edge's certificate
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://127.0.0.1:{edge.tls_port}/cdn-cgi/access/certs", timeout=10)
        with edge.client("httpx") as anonymous_httpx:
            assert anonymous_httpx.get(edge.certs_url).status_code == 200
    # no TLS listener: the clients are plain ones, and ssl_context() says what to add
    with start_edge(one_app(_assertion, "alice@acme.test")) as plain:
        assert (plain.tls_port, plain.ca) == (None, None)
        with pytest.raises(FakeEdgeError) as err:
            plain.ssl_context()
        assert str(err.value) == "this edge has no TLS listener: add tls_listen to its config"


def test_an_open_inspector_stream_does_not_hold_back_reads_of_the_journal() -> None:
    """``edge.requests`` waits (up to a second) for the requests the edge is still handling; the
    inspector's event stream, open as long as its page, is not one of them (the journal never
    records it), so reads with the inspector open do not each wait their full second."""
    with (
        start_edge(one_app(_assertion, "alice@acme.test")) as edge,
        edge.client() as watcher,
        watcher.get(f"{edge.team_domain}/cdn-cgi/fakeedge/events", stream=True, timeout=10) as stream,
    ):
        assert stream.headers["Content-Type"] == "text/event-stream"
        # kept: urllib3 closes the connection when a stream's reader is dropped half-read
        lines = stream.iter_lines()
        assert next(lines) == b": idle"  # the stream is open, waiting for requests
        assert edge.edge.core.handling == 0
        with edge.login("alice@acme.test") as session:
            assert session.get(edge.url("App", "/x")).status_code == 200
        assert edge.requests.last.path == "/x"
        assert next(line for line in lines if line).startswith(b"id: ")  # still open: the requests arrive on it
