"""Mutations of every valid config: each is valid, or gets one line per error naming file and key.

The mutations are enumerated deterministically from ``examples/`` and the tests' base config:
delete a key or item, give a value another type (int, str, list, mapping, null, bool, NaN, inf,
a huge number), rename a key, write a key twice, an over-long string, control characters, and
whole-file ones (empty, a list, binary, invalid UTF-8, an alias bomb, deep nesting). An even
spread goes through ``load_config`` and through ``fakeedge check`` (click's runner, and a few
real subprocesses); ``FAKEEDGE_HYPOTHESIS_EXAMPLES`` (a count) widens both, 100000 runs all.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from fakeedge.cli import main
from fakeedge.config import load_config
from fakeedge.errors import ConfigError

from .conftest import base_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LONG = "x" * 300
CONTROL = "a\x07b\nc\x1bd\u2028e"
HUGE = 10**40
# the replacement values of "change a value's type"
VALUES: list[tuple[str, Any]] = [
    ("int", 7),
    ("negative", -1),
    ("str", "x"),
    ("empty-str", ""),
    ("list", ["x"]),
    ("empty-list", []),
    ("mapping", {"k": "v"}),
    ("null", None),
    ("true", True),
    ("false", False),
    ("float", 1.5),
    ("nan", float("nan")),
    ("inf", float("inf")),
    ("huge", HUGE),
    ("long", LONG),
    ("control", CONTROL),
]
# the only places where the schema takes any value: a user's extra claims
FREE_FORM = re.compile(r"users\[\d+\]\.custom\.")
DOCUMENT_ERRORS = (
    "expected a mapping of settings such as 'team: acme', got ",
    "expected a cloudflared config (a mapping with ingress), got ",
)
KEY_PATH = re.compile(r"(?:[^\s:.\[\]]+|\[\d+\])(?:\.[^\s:.\[\]]+|\[\d+\])*")


@dataclass(frozen=True)
class Mutation:
    base: str
    id: str
    make: Callable[[], str | bytes]  # the mutated file's content, made when the mutation is picked
    path: str  # the key path the mutation touched, "" for the whole file
    must_fail: bool

    @property
    def text(self) -> str | bytes:
        return self.make()


def _path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _nodes(tree: Any, parts: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if parts:
        yield parts, tree
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _nodes(value, (*parts, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _nodes(value, (*parts, i))


def _set(tree: Any, parts: tuple[str | int, ...], value: Any, *, delete: bool = False) -> Any:
    tree = copy.deepcopy(tree)
    node = tree
    for part in parts[:-1]:
        node = node[part]
    if delete:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return tree


def _must_reject(path: str, old: Any, new: Any) -> bool:
    """True when the documented schema has no place for ``new`` where ``old`` stood."""
    if FREE_FORM.match(path):
        return (isinstance(new, float) and new != new) or new in (float("inf"),)
    if new is None:
        return False  # null is "not set": valid wherever the key is optional
    if isinstance(new, float) and not (new == new and abs(new) != float("inf")):
        return True  # no key takes NaN or infinity
    if isinstance(new, str) and (new == "" or new == CONTROL):
        return True  # no key takes an empty string or control characters
    if isinstance(old, dict):
        return not isinstance(new, dict) or bool(new)
    if isinstance(old, list):
        return not isinstance(new, list | str)
    if isinstance(old, bool):
        return not isinstance(new, bool)
    if isinstance(old, str):
        return isinstance(new, dict | list | bool) and not (path == "listen" and new is False)
    return False


def _dump(tree: Any) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=False, width=1000)


def _duplicates(text: str) -> Iterator[tuple[str, str]]:
    """Each ``key: value`` line written twice in a row, as an editor's copy-paste slip does."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = re.match(r"(\s*)(- )?([A-Za-z_][\w-]*):", line)
        if m and not line.rstrip().endswith(":"):
            indent = m.group(1) + ("  " if m.group(2) else "")
            again = indent + line[len(m.group(1)) + len(m.group(2) or "") :]
            yield f"dup-line{i}", "".join((*lines[: i + 1], again, *lines[i + 1 :]))


COMPOSE = (EXAMPLES / "compose" / "fakeedge.yml").read_text()
CLOUDFLARED = (EXAMPLES / "compose" / "cloudflared.yml").read_text()


def _bases() -> list[tuple[str, str]]:
    bases = [(p.name, p.read_text()) for p in sorted(EXAMPLES.glob("*.yml"))]
    bases.append(("compose-fakeedge.yml", COMPOSE))
    bases.append(("cloudflared.yml", CLOUDFLARED))  # read through compose-fakeedge.yml's ingress_file
    bases.append(("base-config.yml", _dump(base_config("http://127.0.0.1:9"))))
    return bases


def _rename(tree: Any, parts: tuple[str | int, ...], new: Any) -> Any:
    tree = copy.deepcopy(tree)
    node = tree
    for part in parts[:-1]:
        node = node[part]
    items = list(node.items())
    node.clear()
    node.update((new if k == parts[-1] else k, v) for k, v in items)
    return tree


def _bomb(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _given(content: str | bytes) -> Callable[[], str | bytes]:
    return lambda: content


def mutations() -> list[Mutation]:
    out: list[Mutation] = []
    for base, text in _bases():
        tree = yaml.safe_load(text)
        out.append(Mutation(base, "as-is", _given(text), "", must_fail=False))
        for parts, old in _nodes(tree):
            path = _path(parts)
            if base == "cloudflared.yml" and parts[0] in ("tunnel", "credentials-file"):
                continue  # read by cloudflared only; fakeedge takes any value
            gone = functools.partial(lambda t, p: _dump(_set(t, p, None, delete=True)), tree, parts)
            out.append(Mutation(base, f"{path}:delete", gone, path, False))
            for name, new in VALUES:
                must = _must_reject(path, old, new)
                changed = functools.partial(lambda t, p, v: _dump(_set(t, p, v)), tree, parts, new)
                out.append(Mutation(base, f"{path}:{name}", changed, path, must))
            if isinstance(parts[-1], str):
                free = FREE_FORM.match(path + ".") is not None or path.startswith(("email_lists.", "ip_lists."))
                for name, new in (("int", 7), ("long", LONG), ("control", CONTROL), ("null", None)):
                    renamed = functools.partial(lambda t, p, n: _dump(_rename(t, p, n)), tree, parts, new)
                    out.append(Mutation(base, f"{path}:key-{name}", renamed, path, not free))
        for name, again in _duplicates(text):
            out.append(Mutation(base, name, _given(again), "", must_fail=True))
        for name, new in (("long-key", LONG), ("control-key", CONTROL)):
            # cloudflared has many keys fakeedge does not use: they are notes, not errors
            must = base != "cloudflared.yml"
            out.append(Mutation(base, f"top:{name}", functools.partial(_dump, {**tree, new: 1}), "", must_fail=must))
        whole: dict[str, str | bytes] = {
            "empty": "",
            "top-list": _dump([tree]),
            "top-scalar": "acme\n",
            "binary": "\x00\x01\x02garbage",
            "truncated": text[: len(text) // 2] + "\n  - [",
            "invalid-utf8": text.encode()[:40] + b"\xc3\x28" + text.encode()[40:],
            "cycle": text + "cycle: &c [*c]\n",
        }
        if base == "base-config.yml":  # slow ones, once
            whole |= {"bomb": text + _bomb(9), "deep": text + "deep: " + "[" * 2000 + "]" * 2000 + "\n"}
        out += [Mutation(base, name, _given(t), "", True) for name, t in whole.items()]
    return out


MUTATIONS = mutations()


def _write(tmp_path: Path, mutation: Mutation) -> tuple[Path, tuple[str, ...]]:
    """Write the mutated file; answer the file to load and the files errors may name."""
    (tmp_path / "cloudflared.yml").write_text(CLOUDFLARED)
    (tmp_path / "compose-fakeedge.yml").write_text(COMPOSE)
    path = tmp_path / mutation.base
    text = mutation.text
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    if mutation.base == "cloudflared.yml":
        return tmp_path / "compose-fakeedge.yml", (str(path), str(tmp_path / "compose-fakeedge.yml"))
    return path, (str(path),)


def _check_lines(lines: list[str], sources: tuple[str, ...], mutation: Mutation) -> list[str]:
    """The complaints about one error report (empty when it is as the interface promises)."""
    problems = []
    if not lines:
        problems.append("no error lines")
    for line in lines:
        source = next((s for s in sources if line.startswith(f"{s}: ")), None)
        if source is None:
            problems.append(f"line does not start with the file name: {line!r}")
            continue
        rest = line[len(source) + 2 :]
        if mutation.path == "" and rest.startswith(DOCUMENT_ERRORS):
            continue  # about the whole document: there is no key to name
        key, sep, message = rest.partition(": ")
        if not sep or not message or not (KEY_PATH.fullmatch(key) or re.fullmatch(r"line \d+", key)):
            problems.append(f"line names no key path: {line!r}")
        # what the user wrote is cut; the schema's own list of valid keys grows with the schema
        if len(line.split(" valid: ")[0]) > len(source) + 500:
            problems.append(f"line of {len(line)} characters: {line[:120]!r}...")
        if LONG in line or "\x07" in line:
            problems.append(f"over-long or control characters in {line[:120]!r}")
    return problems


def test_the_mutations_are_many() -> None:
    # a guard that the enumeration above keeps its reach
    assert len(MUTATIONS) > 5000
    assert sum(m.must_fail for m in MUTATIONS) > 1000


def _sample(default: int, *, every_kind: bool) -> list[Mutation]:
    """An even spread of ``default`` mutations (``FAKEEDGE_HYPOTHESIS_EXAMPLES``: that many;
    a count above the total runs all), with ``every_kind`` each whole-file mutation as well."""
    wanted = int(os.environ.get("FAKEEDGE_HYPOTHESIS_EXAMPLES", "0") or 0) or default
    kinds = [m for m in MUTATIONS if not m.path and not m.id.startswith("dup-line")] if every_kind else []
    rest = [m for m in MUTATIONS if m not in kinds]
    return kinds + rest[:: max(1, len(rest) // max(1, wanted))]


def test_every_mutation_is_valid_or_one_line_per_error(tmp_path: Path) -> None:
    failures: list[str] = []
    for mutation in _sample(default=200, every_kind=True):
        path, sources = _write(tmp_path, mutation)
        try:
            load_config(path)
        except ConfigError as exc:
            lines = [str(e) for e in exc.errors]
            assert str(exc) == "\n".join(lines)
            failures += [f"{mutation.base} {mutation.id}: {p}" for p in _check_lines(lines, sources, mutation)]
        except Exception as exc:
            failures.append(f"{mutation.base} {mutation.id}: {type(exc).__name__}: {str(exc)[:200]}")
        else:
            if mutation.must_fail:
                failures.append(f"{mutation.base} {mutation.id}: accepted")
    assert failures == []


def test_check_prints_one_line_per_error(tmp_path: Path) -> None:
    runner = CliRunner()
    failures: list[str] = []
    for mutation in _sample(default=60, every_kind=False):
        path, sources = _write(tmp_path, mutation)
        result = runner.invoke(main, ["check", "--config", str(path)])
        where = f"{mutation.base} {mutation.id}"
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            failures.append(f"{where}: {type(result.exception).__name__}: {result.exception}")
        elif result.exit_code == 0:
            if mutation.must_fail:
                failures.append(f"{where}: accepted")
        elif result.exit_code != 1 or result.stdout:
            failures.append(f"{where}: exit {result.exit_code}, stdout {result.stdout[:200]!r}")
        else:
            lines = result.stderr.splitlines()
            prefix = "fakeedge: error: "
            if not all(line.startswith(prefix) for line in lines):
                failures.append(f"{where}: {result.stderr[:300]!r}")
            else:
                problems = _check_lines([line[len(prefix) :] for line in lines], sources, mutation)
                failures += [f"{where}: {p}" for p in problems]
    assert failures == []


@pytest.mark.parametrize(
    "mutation_id",
    ["apps[0].policies[0].include[0]:control", "binary", "top:control-key", "as-is"],
)
def test_check_in_a_real_process(tmp_path: Path, mutation_id: str) -> None:
    mutation = next(m for m in MUTATIONS if m.base == "base-config.yml" and m.id == mutation_id)
    path, _ = _write(tmp_path, mutation)
    result = subprocess.run(
        [sys.executable, "-m", "fakeedge.cli", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr
    if mutation_id == "as-is":
        assert result.returncode == 0 and result.stderr == ""
    else:
        assert result.returncode == 1 and result.stdout == ""
        lines = result.stderr.splitlines()
        assert lines and all(line.startswith(f"fakeedge: error: {path}: ") for line in lines)
