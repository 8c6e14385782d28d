"""The key store on disk: owner-only files, survival across restarts, rotation order."""

from __future__ import annotations

import json
import logging
import stat
import subprocess
from pathlib import Path

import pytest

from fakeedge.errors import KeyStoreError
from fakeedge.keys import KeyStore, kid_of


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_are_owner_only_and_survive_restarts(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    store = KeyStore(directory, now=1_800_000_000)
    assert _mode(directory) == 0o711  # reachable by path (the public CA copy), not listable
    key_file = directory / f"{store.current.kid}.key"
    assert _mode(key_file) == 0o600
    assert _mode(directory / "state.json") == 0o600
    assert kid_of(store.current.public_key) == store.current.kid
    again = KeyStore(directory, now=1_800_000_100)
    assert again.current.kid == store.current.kid


def test_a_new_keys_dir_is_announced_and_ignored_by_git(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # keys_dir: keys beside a config the user commits: git must not pick the private keys up
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    (tmp_path / "fakeedge.yml").write_text("team: acme\n")
    with caplog.at_level(logging.WARNING, logger="fakeedge"):
        store = KeyStore(tmp_path / "keys", now=1_800_000_000)
        KeyStore(tmp_path / "keys", now=1_800_000_000)  # an existing folder: no second warning
    assert [r.getMessage() for r in caplog.records] == [
        f"fakeedge: created {tmp_path / 'keys'} for private keys; its .gitignore keeps them out of git"
    ]
    assert (tmp_path / f"keys/{store.current.kid}.key").exists()
    status = subprocess.run(
        ["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert status.stdout == "?? fakeedge.yml\n"


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, now=1_800_000_000)
    key_file = tmp_path / f"{store.current.kid}.key"
    key_file.chmod(0o644)
    KeyStore(tmp_path, now=1_800_000_000)
    assert _mode(key_file) == 0o600


def test_rotation_keeps_previous_first_for_the_grace(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, now=1_800_000_000)
    old = store.current.kid
    new = store.rotate(now=1_800_000_000, grace=3600).kid
    doc = json.loads(store.certs_document(1_800_000_010))
    assert [k["kid"] for k in doc["keys"]] == [old, new]
    assert doc["public_cert"]["kid"] == new
    assert [c["kid"] for c in doc["public_certs"]] == [old, new]
    reloaded = KeyStore(tmp_path, now=1_800_000_020)
    assert [k.kid for k in reloaded.keys(1_800_000_020)] == [old, new]
    doc = json.loads(store.certs_document(1_800_003_601))
    assert [k["kid"] for k in doc["keys"]] == [new]
    assert store.find(old, 1_800_003_601) is None


def test_corrupt_state_is_a_clear_error(tmp_path: Path) -> None:
    KeyStore(tmp_path, now=1_800_000_000)
    (tmp_path / "state.json").write_text("{")
    with pytest.raises(KeyStoreError) as info:
        KeyStore(tmp_path, now=1_800_000_000)
    assert str(info.value).startswith(f"{tmp_path / 'state.json'}: unreadable key state (")
    assert str(info.value).endswith(f"delete {tmp_path} to start with new keys")
