"""The README's first screen and CI stay in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    first_screen = readme.split("---", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", first_screen)


def test_first_screen_has_the_two_commands() -> None:
    demo, tests = _commands()
    assert demo.startswith("python3 -m venv .venv && ") and demo.endswith("fakeedge serve")
    assert tests.startswith("python3 -m venv .venv && ") and "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == _commands()[1]
    assert "chromium" in (ROOT / ".ci" / "run").read_text()
