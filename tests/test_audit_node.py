"""The audit against origins in another stack: Node with the ``jose`` npm package (tests/node/).

``.ci/run`` installs node and runs ``npm ci`` in tests/node; without them these tests skip.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fakeedge.audit import CASES
from fakeedge.testing import FakeEdge, FakeEdgeFactory

from .test_audit_functional import audit_config, verdicts

NODE_DIR = Path(__file__).parent / "node"
START_LIMIT = 20.0  # seconds for node to print its port
STALL = 8.0  # certs_slow: past the origins' 4 s certs timeout, short of the audit's own (10 s)

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules" / "jose").is_dir(),
    reason="needs node and `npm ci` in tests/node (.ci/run does both)",
)

# flaw -> the rows that must fail; a correct jose origin takes a token without a kid when one key
# is published (it tries the keys that fit): a warning on that row, never a failure
NODE_FLAWS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "trusts_email_header": frozenset({"email_header_only", "email_header_disagrees"}),
    "no_aud": frozenset({"wrong_aud", "other_app"}),
    "alg_none": frozenset({"alg_none"}),
    "fails_open_certs": frozenset({"certs_failing", "certs_slow"}),
}


@pytest.fixture
async def node_origin() -> AsyncIterator[Callable[[FakeEdge, str], Awaitable[str]]]:
    procs: list[asyncio.subprocess.Process] = []

    async def go(edge: FakeEdge, flaw: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "node", "origin.js", flaw,
            cwd=NODE_DIR,
            env={"ISSUER": edge.team_domain, "AUD": edge.aud("Admin"), "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_LIMIT)
        word, _, port = line.decode().partition(" ")
        assert word == "listening", line
        return f"http://127.0.0.1:{int(port)}"

    yield go
    for proc in procs:
        proc.kill()
        await proc.wait()


async def start(
    fakeedge: FakeEdgeFactory, node_origin: Callable[[FakeEdge, str], Awaitable[str]], flaw: str
) -> tuple[FakeEdge, str]:
    edge = await fakeedge(audit_config("http://127.0.0.1:9"))
    url = await node_origin(edge, flaw)
    # node needs the edge's address to start; the edge's ingress learns node's afterwards
    ingress = tuple(dataclasses.replace(r, service=url) if r.hostname else r for r in edge.config.ingress)
    edge.core.reconfigure(dataclasses.replace(edge.config, ingress=ingress))
    return edge, url


@pytest.mark.parametrize("flaw", sorted(NODE_FLAWS))
async def test_jose_origins(
    fakeedge: FakeEdgeFactory, node_origin: Callable[[FakeEdge, str], Awaitable[str]], flaw: str
) -> None:
    edge, url = await start(fakeedge, node_origin, flaw)
    report = await edge.audit(url + "/api/me", app="Admin", stall=STALL, rotation_wait=3)
    expected = NODE_FLAWS[flaw]
    assert report.ok == (not expected), report
    assert verdicts(report, "FAIL") == expected, report
    skipped: set[str] = set()
    assert verdicts(report, "skipped") == skipped, report
    unproven = {"certs_failing", "certs_empty", "certs_slow"} - expected if flaw == "trusts_email_header" else set()
    assert verdicts(report, "inconclusive") == unproven, report
    warned = verdicts(report, "warn")
    assert warned <= {"no_kid"}, report
    assert verdicts(report, "pass") == set(CASES) - expected - skipped - unproven - warned, report
