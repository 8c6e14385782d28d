"""How long a test edge takes to start and stop: cold (first in a process) and warm (the ones after).

    python bench/start.py [--rounds 200]

Rows: the async edge (``EdgeFactory``, what the ``fakeedge`` fixture does) with its default
temporary keys (one key per process, copied), the same with an empty ``keys_dir`` per edge (a new
RSA key each: what every test paid before), and the sync edge (``start_edge``: its own loop thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

CONFIG: dict[str, Any] = {
    "team": "acme",
    "apps": [
        {
            "name": "App",
            "domain": "app.acme.test",
            "policies": [{"name": "a", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]}],
        }
    ],
    "ingress": [{"hostname": "app.acme.test", "service": "http://127.0.0.1:9"}, {"service": "http_status:404"}],
}


async def _async_edge(fresh_key: bool) -> tuple[float, float]:
    from fakeedge.testing import EdgeFactory

    with tempfile.TemporaryDirectory() as keys:
        t0 = time.perf_counter()
        async with EdgeFactory() as start:
            await start(CONFIG, keys_dir=keys if fresh_key else None)
            t1 = time.perf_counter()
        return t1 - t0, time.perf_counter() - t1


def _sync_edge() -> tuple[float, float]:
    from fakeedge.testing_sync import start_edge

    t0 = time.perf_counter()
    with start_edge(CONFIG):
        t1 = time.perf_counter()
    return t1 - t0, time.perf_counter() - t1


def measure(kind: str, rounds: int) -> dict[str, float]:
    """In this process (a fresh one per kind): the first start, then ``rounds`` more."""
    run: Callable[[], tuple[float, float]]
    match kind:
        case "async":
            run = lambda: asyncio.run(_async_edge(False))  # noqa: E731
        case "async-fresh-key":
            run = lambda: asyncio.run(_async_edge(True))  # noqa: E731
        case "sync":
            run = _sync_edge
        case _:
            raise SystemExit(f"unknown kind {kind!r}")
    cold, _ = run()
    starts, stops = zip(*(run() for _ in range(rounds)), strict=True)
    return {
        "cold": cold * 1000,
        "p50": statistics.median(starts) * 1000,
        "p90": statistics.quantiles(starts, n=10)[-1] * 1000,
        "stop": statistics.median(stops) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--kind", help=argparse.SUPPRESS)  # one measurement, in a child process
    args = parser.parse_args()
    if args.kind:
        print(json.dumps(measure(args.kind, args.rounds)))
        return
    print(f"{'edge start (ms)':32} {'cold':>7} {'warm p50':>9} {'warm p90':>9} {'stop p50':>9}")
    for kind, label in (
        ("async", "async, one key per process"),
        ("async-fresh-key", "async, a new key per edge"),
        ("sync", "sync (start_edge), own thread"),
    ):
        # a child process per row: "cold" is the first edge of a process, fakeedge's imports included
        out = subprocess.run(
            [sys.executable, __file__, "--kind", kind, "--rounds", str(args.rounds)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        r = json.loads(out)
        print(f"{label:32} {r['cold']:7.1f} {r['p50']:9.2f} {r['p90']:9.2f} {r['stop']:9.2f}")


if __name__ == "__main__":
    main()
