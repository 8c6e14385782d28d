"""Playwright for Node (playwright-core, Debian's Chromium) past the login wall: a stored state written
by ``edge.storage_state()``, and the SSO page. ``.ci/run`` installs tests/node_playwright with ``npm ci``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakeedge.testing import one_app
from fakeedge.testing_sync import SyncEdge, start_edge

from .conftest import BROWSER_MARKS, CHROMIUM
from .test_toolkit_browser import origin

pytestmark = BROWSER_MARKS
NODE_DIR = Path(__file__).parent / "node_playwright"


@pytest.fixture
def edge() -> Iterator[SyncEdge]:
    with start_edge(one_app(origin, "alice@acme.test", service_token="ci")) as running:
        yield running


def test_playwright_for_node_gets_past_the_login_wall(edge: SyncEdge, tmp_path: Path) -> None:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "playwright-core").is_dir():
        if os.environ.get("CI"):
            pytest.fail("tests/node_playwright is not installed: .ci/run runs `npm ci` there")
        pytest.skip("needs node and `npm ci` in tests/node_playwright")
    state = tmp_path / "state.json"
    state.write_text(json.dumps(edge.storage_state("alice@acme.test")))
    env = {**os.environ, "APP_URL": edge.url("App"), "STATE_FILE": str(state), "EMAIL": "alice@acme.test"}
    env["CHROMIUM"] = str(CHROMIUM)
    proc = subprocess.run(
        ["node", "--test", "login_wall.test.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "# pass 2" in proc.stdout, proc.stdout
    emails = [r.email for r in edge.requests if r.path == "/"]
    assert emails == ["alice@acme.test", "alice@acme.test"]  # each way in reached the origin signed in
