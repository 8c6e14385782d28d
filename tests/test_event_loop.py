"""``fakeedge serve`` runs on uvloop when the ``fast`` extra installed it (issue 16)."""

from __future__ import annotations

import asyncio

import pytest

from fakeedge.cli import event_loop_factory

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
