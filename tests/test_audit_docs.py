"""docs/audit.md says what the code does: the battery's rows, the config shapes, a report's shape."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from fakeedge.audit import CASES
from fakeedge.config_audit import Shape

pytest_plugins = ["pytester"]

DOC = (Path(__file__).parent.parent / "docs" / "audit.md").read_text(encoding="utf-8")
EXPECT = {"refuse": "refuses", "accept": "accepts", "identity": "acts on the token's user"}


def test_the_rows_table_is_the_battery() -> None:
    table = "\n".join(
        ["| case | sends | a correct origin | if it does not |", "| --- | --- | --- | --- |"]
        + [f"| `{c.name}` | {c.sent} | {EXPECT[c.expect]} | {c.fix} |" for c in CASES.values()]
    )
    assert table + "\n" in DOC


def test_every_config_shape_is_explained() -> None:
    section = DOC.split("## The edge config", 1)[1]
    explained = set(re.findall(r"^\| `([a-z-]+)`(?:, `([a-z-]+)`)? \|", section, re.M))
    names = {name for pair in explained for name in pair if name}
    assert names == set(get_args(Shape))


def test_the_sample_report_has_every_row() -> None:
    sample = re.search(r"```text\n\$ fakeedge audit .*?\n(.*?)```", DOC, re.S)
    assert sample is not None
    lines = sample.group(1).splitlines()
    assert [line.split()[0] for line in lines[3 : 3 + len(CASES)]] == list(CASES)
    assert lines[-1].startswith("FAIL: the origin accepted what it must refuse (21 passed, 2 failed")


def test_assert_report_ok_shows_the_whole_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_origin="""
from fakeedge.audit import Attempt, Report, Row

def test_origin():
    rows = [Row("wrong_aud", "refuse", "FAIL", "accepted a token for another audience", [Attempt("header", 200, "hi", True)])]
    report = Report("http://127.0.0.1:1/api/me", "Admin", "a" * 64, "alice@acme.test", rows * 12)
    assert report.ok, report
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E   * FAIL: the origin accepted what it must refuse (0 passed, 12 failed, 0 warn, 0 inconclusive, 0 skipped)"]
    )
