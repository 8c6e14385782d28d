"""``fakeedge audit`` as a real subprocess (its own edge, or a running one's control API) and ``POST /audit``.

The origins run in the test's loop on 127.0.0.1; the command runs as CI would run it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from fakeedge.audit import CASES
from fakeedge.config import default_aud
from fakeedge.testing import FakeEdgeFactory, loopback_session

from .audit_origins import origin_app
from .conftest import copy_test_key
from .test_audit_functional import audit_config

FAKEEDGE = [sys.executable, "-m", "fakeedge.cli"]
RUN_LIMIT = 120.0  # seconds: one whole battery, bounded


async def run(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *FAKEEDGE, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_LIMIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def serve_origin() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def go(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield go
    for runner in reversed(runners):
        await runner.cleanup()


def write_config(tmp_path: Path, edge_port: int, origin: str) -> Path:
    raw = audit_config(origin)
    raw["listen"] = f"127.0.0.1:{edge_port}"
    raw["keys_dir"] = str(copy_test_key(tmp_path / "keys"))
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("flaw", "status", "last_line"),
    [
        (None, 0, "ok: nothing was wrongly accepted and every control passed"),
        ("no_aud", 1, "FAIL: the origin accepted what it must refuse"),
    ],
    ids=["correct", "no_aud"],
)
async def test_the_command_starts_its_own_edge_and_gates_on_the_verdict(
    tmp_path: Path,
    serve_origin: Callable[[web.Application], Awaitable[str]],
    flaw: str | None,
    status: int,
    last_line: str,
) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    origin = await serve_origin(origin_app(issuer, default_aud("acme", "Admin"), flaw))
    config = write_config(tmp_path, port, origin)
    # the user's keys exist before the audit and are the same after it (the audit rotates a copy)
    code, _, err = await run("keys", "show", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    state = (tmp_path / "keys" / "state.json").read_bytes()
    junit = tmp_path / "audit.xml"
    code, out, err = await run(
        "audit", "--config", str(config), "--app", "Admin", f"{origin}/api/me", "--stall", "6",
        "--junit", str(junit), cwd=tmp_path,
    )  # fmt: skip
    assert (code, err) == (status, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"fakeedge audit: {origin}/api/me as app 'Admin' (aud ")
    assert lines[2].split() == ["case", "expected", "origin", "did", "verdict", "why", "/", "fix"]
    assert lines[-1].startswith(last_line)
    assert (tmp_path / "keys" / "state.json").read_bytes() == state
    suite = ET.parse(junit).getroot()
    assert [c.get("name") for c in suite.iter("testcase")] == list(CASES)
    failed = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failed == (set() if flaw is None else {"wrong_aud", "other_app"})
    assert suite.get("failures") == str(len(failed))


async def test_json_through_a_running_edge_and_inconclusive_exit(
    fakeedge: FakeEdgeFactory, tmp_path: Path, serve_origin: Callable[[web.Application], Awaitable[str]]
) -> None:
    edge = await fakeedge(audit_config("http://127.0.0.1:9"))
    origin = await serve_origin(origin_app(edge.team_domain, edge.aud("Admin")))
    config = tmp_path / "fakeedge.yml"
    config.write_text(yaml.safe_dump(audit_config(origin)), encoding="utf-8")
    code, out, err = await run(
        "audit", "--config", str(config), "--app", "Admin", "--edge", edge.team_domain, "--format", "json",
        "--path", "/nowhere", "--stall", "6", "--rotation-wait", "0", f"{origin}/api/me", cwd=tmp_path,
    )  # fmt: skip
    assert (code, err) == (3, "")
    report = json.loads(out)
    assert (report["ok"], report["outcome"]) == (False, "inconclusive")
    assert report["inconclusive"][0] == "control 'valid' refused: 404: wrong path? (/nowhere)"
    assert report["rows"][0] == {
        "case": "valid",
        "sent": CASES["valid"].sent,
        "expected": "accept",
        "verdict": "inconclusive",
        "why": "404: wrong path? (/nowhere)",
        "attempts": [
            {"carrier": "header", "status": 404, "excerpt": "404: Not Found", "accepted": False, "error": None}
        ],
    }


async def test_command_line_mistakes_are_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), "http://127.0.0.1:9")
    code, out, err = await run(
        "audit", "--config", str(config), "--app", "Nope", "http://127.0.0.1:9/", cwd=tmp_path
    )  # fmt: skip
    assert (code, out, err) == (1, "", "fakeedge: error: no app named 'Nope' apps: Admin, Reports\n")
    code, out, err = await run(
        "audit", "--config", str(config), "--app", "Admin", "--accept-status", "2xx", "http://127.0.0.1:9/", cwd=tmp_path
    )  # fmt: skip
    assert code == 2
    assert err.splitlines()[-1] == (
        "Error: Invalid value for --accept-status: expected statuses such as 200,204 or 200-299, got '2xx'"
    )
    code, out, err = await run(
        "audit", "--config", str(config), "--app", "Admin", "ftp://127.0.0.1/", cwd=tmp_path
    )  # fmt: skip
    assert (code, err) == (
        1,
        "fakeedge: error: expected the origin's URL, such as http://127.0.0.1:3002/api/me, got 'ftp://127.0.0.1/'\n",
    )


async def control(edge_url: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with loopback_session() as client, client.post(f"{edge_url}/cdn-cgi/fakeedge/audit", json=body) as resp:
        return resp.status, await resp.json()


async def test_the_control_api_runs_the_audit(
    fakeedge: FakeEdgeFactory, serve_origin: Callable[[web.Application], Awaitable[str]]
) -> None:
    edge = await fakeedge(audit_config("http://127.0.0.1:9"))
    origin = await serve_origin(origin_app(edge.team_domain, edge.aud("Admin"), "ignores_nbf"))
    status, report = await control(
        edge.team_domain, {"origin": f"{origin}/api/me", "app": "Admin", "stall": "6s", "accept_status": [200]}
    )
    assert status == 200
    assert report["outcome"] == "fail"
    assert [r["case"] for r in report["rows"] if r["verdict"] == "FAIL"] == ["not_yet_valid"]
    for body, error in [
        ({"app": "Admin"}, "origin: expected a non-empty string"),
        ({"origin": origin, "app": "Admin", "accept": 200}, "unknown key(s) accept; valid: " + ", ".join(
            ("origin", "app", "path", "email", "accept_status", "timeout", "stall", "rotation_wait"))),
        ({"origin": origin, "app": "Admin", "accept_status": [True]},
         'accept_status: expected a list of statuses such as [200, 204], or "200-299"'),
        ({"origin": origin, "app": "Admin", "timeout": 7200}, "timeout: expected 0 to 3600 seconds, got 7200.0"),
    ]:  # fmt: skip
        assert await control(edge.team_domain, body) == (400, {"error": error})
