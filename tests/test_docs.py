"""docs/testing.md runs: its pytest file, its config, its Node tests and its curl lines."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from fakeedge.config import load_config
from fakeedge.testing import FakeEdge, FakeEdgeFactory

from .origins import Verifier, verifying_origin

pytest_plugins = ["pytester"]

GUIDE = Path(__file__).parent.parent / "docs" / "testing.md"


def block(lang: str, first_line: str) -> str:
    """The fenced ``lang`` block of the guide whose first line is ``first_line``."""
    for match in re.finditer(rf"```{lang}\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S):
        if match.group(1).startswith(first_line):
            return match.group(1)
    raise AssertionError(f"docs/testing.md has no {lang} block starting {first_line!r}")


def test_the_pytest_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    pytester.makepyfile(test_access=block("python", "# test_access.py"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)


def test_the_yaml_example_is_a_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "fakeedge.yml"
    path.write_text(block("yaml", "# fakeedge.yml"))
    config = load_config(path)
    assert [a.name for a in config.apps] == ["Admin"]


@pytest.fixture
async def guide_edge(fakeedge: FakeEdgeFactory) -> FakeEdge:
    """The guide's YAML, with a verifying origin in place of ``http://127.0.0.1:3000``."""
    raw: dict[str, Any] = yaml.safe_load(block("yaml", "# fakeedge.yml"))

    def origin(edge: FakeEdge) -> Any:
        verifier = Verifier(cache_jwk_set=False)
        verifier.point_at(edge.certs_url, audience=edge.aud("Admin"), issuer=edge.team_domain)
        return verifying_origin(verifier)

    raw["ingress"][0]["service"] = origin
    return await fakeedge(config=raw)


async def run(*command: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} on PATH")


async def test_the_node_example_passes(guide_edge: FakeEdge, tmp_path: Path) -> None:
    need("node")
    (tmp_path / "access.test.mjs").write_text(block("js", "// access.test.mjs"))
    env = {
        "FAKEEDGE": guide_edge.team_domain,
        "APP_URL": guide_edge.url("Admin").rstrip("/"),
        "ORIGIN_URL": guide_edge.config.ingress[0].service,
    }
    code, out = await run("node", "--test", "access.test.mjs", env=env, cwd=tmp_path)
    assert code == 0, out
    assert "# pass 5" in out, out


async def test_the_curl_example_prints_what_it_says(guide_edge: FakeEdge, tmp_path: Path) -> None:
    need("bash", "curl", "jq")
    script = block("sh", "EDGE=")
    (tmp_path / "guide.sh").write_text(script)
    env = {"EDGE": guide_edge.team_domain, "APP": guide_edge.url("Admin").rstrip("/")}
    code, out = await run("bash", "-euo", "pipefail", "guide.sh", env=env, cwd=tmp_path)
    assert code == 0, out
    said = re.search(r"It prints (.*)\.\n", GUIDE.read_text(encoding="utf-8"))
    assert said is not None
    assert out.split() == re.findall(r"`([^`]+)`", said.group(1))
