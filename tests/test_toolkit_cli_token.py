"""A token from `fakeedge token` is accepted by a running `fakeedge serve` that holds the same keys
(issue 11), and logout still ends it; an edge of the toolkit accepts a token minted by another."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fakeedge.testing import one_app
from fakeedge.testing_sync import loopback_requests_session, start_edge

from .conftest import copy_test_key

TEAM_DOMAIN = "https://acme.cloudflareaccess.com"  # fixed, so the CLI knows the iss before serve runs


def _whoami(environ: dict[str, object], start_response: object) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
    return [str(environ.get("HTTP_CF_ACCESS_AUTHENTICATED_USER_EMAIL", "")).encode()]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """`fakeedge serve` in a subprocess on a free port, in front of a status-only origin."""
    config = one_app("http_status:204", "@acme.test", team_domain=TEAM_DOMAIN, keys_dir=str(copy_test_key(tmp_path / "keys")))
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakeedge.cli", "serve", "--config", str(path), "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        port = None
        for _ in range(50):  # bounded: the banner is a handful of lines
            line = proc.stderr.readline()
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if found or not line:
                port = int(found.group(1)) if found else None
                break
        assert port, "fakeedge serve printed no listening line"
        yield path, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def _cli_token(config: Path, *flags: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "fakeedge.cli", "token", "--config", str(config), "--app", "App", *flags],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def test_a_cli_token_passes_the_running_edge_until_logout(served: tuple[Path, int]) -> None:
    config, port = served
    token = _cli_token(config, "--email", "alice@acme.test")
    session = loopback_requests_session()
    url = f"http://app.acme.test:{port}/"
    assert session.get(url, headers={"Cf-Access-Token": token}, allow_redirects=False).status_code == 204
    resp = session.get(url, cookies={"CF_Authorization": token}, allow_redirects=False)
    assert resp.status_code == 204
    # logout on the app host ends that session: the same token is refused from then on
    session.get(f"{url}cdn-cgi/access/logout", cookies={"CF_Authorization": token}, allow_redirects=False)
    resp = session.get(url, headers={"Cf-Access-Token": token}, allow_redirects=False)
    assert resp.status_code == 302
    # broken tokens from the CLI are still refused
    expired = _cli_token(config, "--email", "alice@acme.test", "--expired")
    assert session.get(url, headers={"Cf-Access-Token": expired}, allow_redirects=False).status_code == 302


def test_an_edge_accepts_a_token_minted_by_another_with_the_same_keys(tmp_path: Path) -> None:
    config = one_app(_whoami, "@acme.test", team_domain=TEAM_DOMAIN, keys_dir=str(copy_test_key(tmp_path / "keys")))
    with start_edge(config) as minter:
        token = minter.mint(email="alice@acme.test")
    with start_edge(config) as edge:
        session = loopback_requests_session()
        resp = session.get(edge.url("App"), headers={"Cf-Access-Token": token}, allow_redirects=False)
        assert (resp.status_code, resp.text) == (200, "alice@acme.test")
        edge.reset()  # a reset ends adopted sessions too
        resp = session.get(edge.url("App"), headers={"Cf-Access-Token": token}, allow_redirects=False)
        assert resp.status_code == 302
