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
    # the guide's pytest.ini as is, with warnings as errors: it must not make pytest warn
    pytester.makeini(block("ini", "# pytest.ini") + "filterwarnings = error\n")
    pytester.makepyfile(test_access=block("python", "# test_access.py"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)


def test_the_yaml_example_is_a_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "fakeedge.yml"
    path.write_text(block("yaml", "# fakeedge.yml"))
    config = load_config(path)
    assert [a.name for a in config.apps] == ["Admin"]


async def start_guide_edge(fakeedge: FakeEdgeFactory, **client: Any) -> FakeEdge:
    """The guide's YAML, with a verifying origin (PyJWKClient with ``client``) in place of ``http://127.0.0.1:3000``."""
    raw: dict[str, Any] = yaml.safe_load(block("yaml", "# fakeedge.yml"))

    def origin(edge: FakeEdge) -> Any:
        verifier = Verifier(**client)
        verifier.point_at(edge.certs_url, audience=edge.aud("Admin"), issuer=edge.team_domain)
        return verifying_origin(verifier)

    raw["ingress"][0]["service"] = origin
    return await fakeedge(config=raw)


@pytest.fixture
async def guide_edge(fakeedge: FakeEdgeFactory) -> FakeEdge:
    return await start_guide_edge(fakeedge, cache_jwk_set=False)


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


async def run_node_example(edge: FakeEdge, tmp_path: Path) -> None:
    (tmp_path / "access.test.mjs").write_text(block("js", "// access.test.mjs"))
    env = {
        "FAKEEDGE": edge.team_domain,
        "APP_URL": edge.url("Admin").rstrip("/"),
        "ORIGIN_URL": edge.config.ingress[0].service,
    }
    code, out = await run("node", "--test", "access.test.mjs", env=env, cwd=tmp_path)
    assert code == 0, out
    assert "# pass 5" in out, out


async def run_sh_example(edge: FakeEdge, tmp_path: Path, first_line: str) -> list[str]:
    """Run the guide's sh block starting ``first_line``; check it prints what the sentence after it says."""
    script = block("sh", first_line)
    (tmp_path / "guide.sh").write_text(script)
    env = {"EDGE": edge.team_domain, "APP": edge.url("Admin").rstrip("/")}
    code, out = await run("bash", "-euo", "pipefail", "guide.sh", env=env, cwd=tmp_path)
    assert code == 0, out
    after = GUIDE.read_text(encoding="utf-8").split(script, 1)[1]
    said = re.search(r"It prints (.*?)[,.]( and|\n)", after)
    assert said is not None
    assert out.split() == re.findall(r"`([^`]+)`", said.group(1))
    return out.split()


async def test_the_node_example_passes(guide_edge: FakeEdge, tmp_path: Path) -> None:
    need("node")
    await run_node_example(guide_edge, tmp_path)


async def test_the_curl_example_prints_what_it_says(guide_edge: FakeEdge, tmp_path: Path) -> None:
    need("bash", "curl", "jq")
    assert await run_sh_example(guide_edge, tmp_path, "EDGE=") == ["302", "200", "200", "302", "2"]
    assert await run_sh_example(guide_edge, tmp_path, "# rotate") == ["2"]


async def test_the_node_example_passes_right_after_the_curl_example(fakeedge: FakeEdgeFactory, tmp_path: Path) -> None:
    # one edge and one origin whose PyJWKClient keeps its defaults (key-set cache, 30 s refetch
    # cooldown), as a reader's would: the curl walk-through must leave nothing that breaks the next
    need("bash", "curl", "jq", "node")
    edge = await start_guide_edge(fakeedge)
    await run_sh_example(edge, tmp_path, "EDGE=")
    await run_node_example(edge, tmp_path)
