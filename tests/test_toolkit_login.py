"""`fakeedge login` and `POST /cdn-cgi/fakeedge/login` (issue 11): a real session of the running edge
as a Netscape jar curl loads, a Cookie: line aiohttp sends, and a service token as cookies; the
session ends with the edge's revoke and reset like one signed in on the SSO page."""

from __future__ import annotations

import asyncio
import json
import selectors
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fakeedge.testing import loopback_session, one_app
from fakeedge.testing_sync import loopback_requests_session, start_edge

from .conftest import copy_test_key

CURL = shutil.which("curl")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """`fakeedge serve` in a subprocess on a free port (its --ready-json), in front of a 204 origin."""
    config = one_app("http_status:204", "@acme.test", service_token="ci", keys_dir=str(copy_test_key(tmp_path / "keys")))
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakeedge.cli", "serve", "--config", str(path), "--listen", "127.0.0.1:0",
         "--ready-json", "--no-access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(60), "fakeedge serve announced no readiness within 60 s"
        yield path, json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fakeedge.cli", *args], capture_output=True, text=True, timeout=60)


def curl(url: str, port: int, *flags: str) -> str:
    """The status curl gets for ``url``, every host resolved to 127.0.0.1 (no /etc/hosts edit)."""
    assert CURL is not None
    out = subprocess.run(
        [CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*",
         "--resolve", f"app.acme.test:{port}:127.0.0.1", *flags, url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout


@pytest.mark.skipif(CURL is None, reason="needs curl")
def test_curl_with_the_netscape_jar_gets_through_until_the_session_is_revoked(
    served: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    config, ready = served
    port = int(ready["url"].rpartition(":")[2])
    url = f"http://app.acme.test:{port}/"
    edge = ["--config", str(config), "--edge", ready["team_domain"]]
    out = cli("login", "alice@acme.test", "--app", "App", "--format", "netscape", *edge)
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout.startswith("# Netscape HTTP Cookie File\n")
    jar = tmp_path / "jar.txt"
    jar.write_text(out.stdout)
    assert curl(url, port) == "302"  # the control: without the jar, the login wall
    assert curl(url, port, "-b", str(jar)) == "204"
    # the Cookie: line works too, as a header
    line = cli("login", "alice@acme.test", "--app", "App", "--format", "cookie", *edge).stdout.strip()
    assert line.startswith("Cookie: CF_Authorization=")
    assert curl(url, port, "-H", line) == "204"
    # a real session of the running edge: the edge lists it and revokes it
    control = loopback_requests_session()
    sessions = control.get(ready["control_url"] + "sessions").json()["sessions"]
    assert [s["email"] for s in sessions] == ["alice@acme.test", "alice@acme.test"]
    revoked = control.post(ready["control_url"] + "sessions/revoke", json={"email": "alice@acme.test"})
    assert revoked.status_code == 200
    assert curl(url, port, "-b", str(jar)) == "302"
    assert curl(url, port, "-H", line) == "302"


@pytest.mark.skipif(CURL is None, reason="needs curl")
def test_a_service_token_as_cookies_for_navigations(served: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    config, ready = served
    port = int(ready["url"].rpartition(":")[2])
    out = cli(
        "login", "--service-token", "ci", "--app", "App", "--format", "netscape",
        "--config", str(config), "--edge", ready["team_domain"],
    )  # fmt: skip
    assert (out.returncode, out.stderr) == (0, "")
    jar = tmp_path / "jar.txt"
    jar.write_text(out.stdout)
    assert curl(f"http://app.acme.test:{port}/", port, "-b", str(jar)) == "204"


def test_login_mistakes_are_one_line(served: tuple[Path, dict[str, Any]]) -> None:
    config, ready = served
    edge = ["--config", str(config), "--edge", ready["team_domain"]]
    out = cli("login", "alice@acme.test", "--app", "Nope", *edge)
    assert out.returncode == 1
    assert out.stderr == (f"fakeedge: error: {ready['control_url']}login: no app named 'Nope' apps: App\n")
    out = cli("login", "mallory@evil.test", "--app", "App", *edge)
    assert (out.returncode, out.stderr) == (
        1, f"fakeedge: error: {ready['control_url']}login: mallory@evil.test may not sign in to 'App': its policies answer deny\n"
    )  # fmt: skip
    out = cli("login", "alice@acme.test", "--service-token", "ci", "--app", "App", *edge)
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == "Error: give EMAIL or --service-token NAME, not both"
    out = cli("login", "alice@acme.test", "--app", "App", "--config", str(config), "--edge", "http://127.0.0.1:9")
    assert out.returncode == 1
    assert out.stderr.startswith(
        "fakeedge: error: http://127.0.0.1:9/cdn-cgi/fakeedge/login: no answer from the edge ("
    )


def _whoami(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(environ.get("HTTP_CF_ACCESS_AUTHENTICATED_USER_EMAIL", "")).encode()]


def test_the_cookie_line_with_aiohttp_until_reset() -> None:
    with start_edge(one_app(_whoami, "alice@acme.test")) as edge:
        control = loopback_requests_session()
        answer = control.post(
            f"{edge.team_domain}/cdn-cgi/fakeedge/login",
            json={"email": "alice@acme.test", "app": "App", "format": "cookie"},
        ).json()
        assert set(answer) == {"cookie", "session", "expires"}

        async def get() -> tuple[int, str]:
            async with loopback_session() as client:
                resp = await client.get(edge.url("App"), headers={"Cookie": answer["cookie"]}, allow_redirects=False)
                return resp.status, await resp.text()

        assert asyncio.run(get()) == (200, "alice@acme.test")
        edge.reset()  # the session is the edge's own: a reset ends it
        assert asyncio.run(get())[0] == 302


def test_the_control_route_refuses_bad_bodies() -> None:
    with start_edge(one_app(_whoami, "alice@acme.test")) as edge:
        control = loopback_requests_session()
        url = f"{edge.team_domain}/cdn-cgi/fakeedge/login"
        cases: list[tuple[dict[str, Any], str]] = [
            ({"email": "alice@acme.test", "app": "App", "format": "har"},
             "format: expected one of storage-state, netscape, cookie, got 'har'"),
            ({"app": "App"}, 'give email or service_token, as in {"email": "alice@acme.test", "app": "Admin"}'),
            ({"email": "alice@acme.test", "app": "App", "secure": True},
             "unknown key(s) secure; valid: email, service_token, app, format"),
            ({"service_token": "ci", "app": "App"}, "no service token named 'ci' service tokens: none"),
        ]  # fmt: skip
        for body, error in cases:
            resp = control.post(url, json=body)
            assert (resp.status_code, resp.json()) == (400, {"error": error})
        assert control.get(f"{edge.team_domain}/cdn-cgi/fakeedge/sessions").json() == {"sessions": []}


def test_login_reaches_the_configs_listen_address_with_the_team_domain_as_host(tmp_path: Path) -> None:
    # `fakeedge login` without --edge: the config's listen address, its team_domain as the Host
    with socket.socket() as probe:  # a free port for the config (`listen: ...:0` cannot be reached)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = one_app(
        "http_status:204", "@acme.test", listen=f"127.0.0.1:{port}",
        team_domain="http://acme.cloudflareaccess.test", keys_dir=str(copy_test_key(tmp_path / "keys")),
    )  # fmt: skip
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakeedge.cli", "serve", "--config", str(path), "--ready-json", "--no-access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(60), "fakeedge serve announced no readiness within 60 s"
        proc.stdout.readline()
        out = cli("login", "alice@acme.test", "--app", "App", "--format", "cookie", "--config", str(path))
        assert (out.returncode, out.stderr) == (0, "")
        resp = loopback_requests_session().get(
            f"http://app.acme.test:{port}/", headers={"Cookie": out.stdout.strip().removeprefix("Cookie: ")},
            allow_redirects=False,
        )  # fmt: skip
        assert resp.status_code == 204
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_login_without_a_reachable_listen_address_asks_for_edge(tmp_path: Path) -> None:
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump(one_app("http_status:204", "@acme.test", listen="127.0.0.1:0")))
    out = cli("login", "alice@acme.test", "--app", "App", "--config", str(path))
    assert (out.returncode, out.stderr) == (
        1,
        "fakeedge: error: the config has no fixed listen address to reach the running edge at; give --edge URL "
        "(its team domain, e.g. http://127.0.0.1:8787)\n",
    )


def test_a_service_token_cookie_needs_an_allow_policy() -> None:
    with start_edge(one_app(_whoami, service_token="ci")) as edge:
        resp = loopback_requests_session().post(
            f"{edge.team_domain}/cdn-cgi/fakeedge/login", json={"service_token": "ci", "app": "App"}
        )
        assert (resp.status_code, resp.json()) == (400, {"error": (
            "app 'App' has no Allow policy, and Cloudflare takes a service token's cookie only where one exists "
            "(spec §5); send its CF-Access-Client-Id and CF-Access-Client-Secret headers instead"
        )})  # fmt: skip
