"""The pytest11 entry point: registered, and cheap to load in every pytest run."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

HEAVY = ("aiohttp", "jwt", "cryptography", "yaml", "multidict", "fakeedge.testing", "fakeedge.edge", "fakeedge.web_app")


def test_entry_point_names_the_plugin_module() -> None:
    (ep,) = [ep for ep in entry_points(group="pytest11") if ep.name == "fakeedge"]
    assert ep.value == "fakeedge.pytest_plugin"


def test_plugin_imports_nothing_heavy() -> None:
    # a fresh interpreter: this one has imported everything already
    code = (
        "import json, sys; import fakeedge.pytest_plugin; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == []
