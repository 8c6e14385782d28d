"""`fakeedge serve --ready-json / --ready-file`: a test runner in any language starts the edge as a
subprocess on port 0 and learns its URLs, team domain, certs URL and apps without the banner (issue 11)."""

from __future__ import annotations

import json
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import jwt
import yaml

from fakeedge.testing import one_app
from fakeedge.testing_sync import loopback_requests_session

from .conftest import copy_test_key

TEAM_DOMAIN = "http://acme.cloudflareaccess.test"


def _first_stdout_line(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """The first line on the child's stdout, waited for at most ``timeout`` seconds (never a hang)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout), f"no readiness line within {timeout}s"
    return proc.stdout.readline()


def test_serve_announces_readiness_as_json_on_stdout_and_in_a_file(tmp_path: Path) -> None:
    config = one_app(
        "http_status:204", "@acme.test", team_domain=TEAM_DOMAIN, service_token="ci", keys_dir=str(copy_test_key(tmp_path / "keys"))
    )
    config_path = tmp_path / "fakeedge.yml"
    config_path.write_text(yaml.safe_dump(config))
    ready_file = tmp_path / "run" / "ready.json"
    ready_file.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakeedge.cli", "serve", "--config", str(config_path), "--listen", "127.0.0.1:0",
         "--ready-json", "--ready-file", str(ready_file)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = _first_stdout_line(proc)
        announced = json.loads(line)
        # the file is written before the line: a runner polling for it sees the same document
        assert json.loads(ready_file.read_text()) == announced
        assert not [p.name for p in ready_file.parent.iterdir() if p != ready_file]  # no temporary left behind
        url = announced["url"]
        port = int(url.rpartition(":")[2])
        assert announced == {
            "url": f"http://127.0.0.1:{port}",
            "tls_url": None,
            "urls": [f"http://127.0.0.1:{port}"],
            "team_domain": TEAM_DOMAIN,
            "certs_url": f"{TEAM_DOMAIN}/cdn-cgi/access/certs",
            "control_url": f"{TEAM_DOMAIN}/cdn-cgi/fakeedge/",
            "apps": [{"name": "App", "domains": ["app.acme.test"], "aud": announced["apps"][0]["aud"]}],
            "pid": proc.pid,
        }
        aud = announced["apps"][0]["aud"]
        assert len(aud) == 64
        # what it announced works: the listener answers, the app's login wall and its certs are there
        session = loopback_requests_session()
        resp = session.get(f"http://app.acme.test:{port}/", allow_redirects=False)
        assert resp.status_code == 302
        assert resp.headers["Location"].startswith(f"{TEAM_DOMAIN}/cdn-cgi/access/login/app.acme.test")
        certs = session.get(f"http://acme.cloudflareaccess.test:{port}/cdn-cgi/access/certs").json()
        token = session.post(
            f"http://acme.cloudflareaccess.test:{port}/cdn-cgi/fakeedge/token",
            json={"app": "App", "email": "alice@acme.test"},
        ).json()["token"]
        kid = jwt.get_unverified_header(token)["kid"]
        (key,) = [jwt.PyJWK(k) for k in certs["keys"] if k["kid"] == kid]
        claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=aud, issuer=announced["team_domain"])
        assert claims["email"] == "alice@acme.test"
        # nothing else on stdout: the line is the whole protocol
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert (proc.returncode, rest) == (0, "")
        assert not ready_file.exists()  # a stopped edge leaves no stale address behind
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_an_unwritable_ready_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config_path = tmp_path / "fakeedge.yml"
    config_path.write_text(yaml.safe_dump(one_app("http_status:204", "@acme.test", keys_dir=str(tmp_path / "k"))))
    missing = tmp_path / "no-such-dir" / "ready.json"
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "fakeedge.cli", "serve", "--config", str(config_path), "--listen", "127.0.0.1:0",
         "--ready-file", str(missing), "--no-access-log"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - started < 60
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        f"fakeedge: error: --ready-file {missing}: cannot write it (No such file or directory)"
    )


def test_the_guide_shows_the_document_as_announced() -> None:
    guide = (Path(__file__).parent.parent / "docs" / "testing.md").read_text(encoding="utf-8")
    shown = json.loads(re.search(r'```json\n(\{"url".*?)```', guide, re.S).group(1))  # type: ignore[union-attr]
    assert list(shown) == ["url", "tls_url", "urls", "team_domain", "certs_url", "control_url", "apps", "pid"]
    assert list(shown["apps"][0]) == ["name", "domains", "aud"]
