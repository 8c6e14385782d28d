"""The README's first screen and CI stay in step."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakeedge.cli import main

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
    assert _commands()[1] in ci
    # verbatim, after every install; only the oldest-aiohttp run (README "aiohttp versions") follows
    after = ci[ci.index(_commands()[1]) + 1 :]
    assert not [line for line in after if "apt-get" in line or "npm" in line], after
    assert any(".venv-aiohttp-oldest/bin/python -m pytest" in line for line in after)
    assert "chromium" in (ROOT / ".ci" / "run").read_text()


def test_first_screen_names_the_debian_packages_ci_installs() -> None:
    first_screen = (ROOT / "README.md").read_text().split("---", 1)[0]
    ci = (ROOT / ".ci" / "run").read_text()
    named = re.search(r"`sudo apt install (python3-venv [^`]+)`", first_screen)
    assert named is not None
    installed = set(re.findall(r"need\+=\(([^)]+)\)", ci))
    assert set(named.group(1).split()) <= installed, "the README names a package .ci/run does not install"
    assert {"python3-venv", "chromium", "libnss3-tools", "nodejs", "jq", "curl"} <= set(named.group(1).split())
    assert "|| true" not in ci  # a failed apt-get update must stop CI, not surface later as a missing package


def test_first_screen_commands_are_not_silent() -> None:
    # pip -q prints nothing for most of a minute: the commands let pip say what it fetches
    for command in _commands():
        assert " -q" not in command, command


def test_the_explain_example_is_what_explain_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    config = re.search(r"```yaml\n(# fakeedge.yml\n.*?)```", readme, re.S)
    example = re.search(r"```sh\n(\$ fakeedge explain .*?)```", readme, re.S)
    assert config is not None and example is not None
    (tmp_path / "fakeedge.yml").write_text(config.group(1))
    monkeypatch.chdir(tmp_path)
    runs = re.findall(r"^\$ fakeedge (.*)\n((?:[^$].*\n)*)", example.group(1), re.M)
    assert len(runs) == 2
    for command, shown in runs:
        result = CliRunner().invoke(main, shlex.split(command))
        assert (result.exit_code, result.stdout) == (0, shown), command


@pytest.mark.parametrize("doc", ["README.md", "docs/testing.md"])
def test_install_lines_need_no_package_index(doc: str) -> None:
    # fakeedge is on no index yet: `pip install 'fakeedge[pytest]'` fails, a checkout or git URL works
    from packaging.requirements import Requirement

    text = " ".join((ROOT / doc).read_text().split())
    assert "pip install 'fakeedge[pytest]'" not in text
    assert "pip install -e '/path/to/fakeedge[pytest]'" in text
    (from_git,) = set(re.findall(r"pip install '(fakeedge\[pytest\] @ [^']+)'", text))
    requirement = Requirement(from_git)
    assert (requirement.name, requirement.extras) == ("fakeedge", {"pytest"})
    assert requirement.url is not None and requirement.url.startswith("git+https://")
