"""docs/audit.md says what the code does: the battery's rows, the config shapes, a report's shape."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from fakeedge.audit import CASES
from fakeedge.config_audit import Shape

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
