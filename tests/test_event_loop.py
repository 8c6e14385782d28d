"""``fakeedge serve`` runs on uvloop when the ``fast`` extra installed it (issue 16)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fakeedge.cli import event_loop_factory

from .conftest import Origin, wait_for
from .test_reliability_functional import serve

uvloop = pytest.importorskip("uvloop", reason="the fast extra (uvloop) is not installed")


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_serve_runs_on_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKEEDGE_UVLOOP", raising=False)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        assert runner.run(_loop_type()) is uvloop.Loop


def test_fakeedge_uvloop_0_keeps_asyncio_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKEEDGE_UVLOOP", "0")
    assert event_loop_factory() is None
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        assert not issubclass(runner.run(_loop_type()), uvloop.Loop)


@pytest.mark.parametrize(
    ("setting", "shown"),
    [
        (None, "uvloop"),
        ("0", "asyncio's own (the fast extra's uvloop makes a proxied request about a fifth cheaper: README, Speed)"),
    ],
)
async def test_the_serve_banner_names_the_event_loop(
    tmp_path: Path, origin: Origin, setting: str | None, shown: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FAKEEDGE_UVLOOP"}
    if setting is not None:
        env["FAKEEDGE_UVLOOP"] = setting
    served = await serve(tmp_path, origin.url, env=env)
    await served.listening()
    await wait_for(lambda: any(line.startswith("fakeedge: event loop") for line in served.lines))
    assert [line for line in served.lines if line.startswith("fakeedge: event loop")] == [
        f"fakeedge: event loop {shown}"
    ]
    served.proc.terminate()
    assert await served.exited(30) == 0
