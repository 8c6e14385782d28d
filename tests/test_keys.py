"""The key store on disk: owner-only files, survival across restarts, rotation order."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import queue
import stat
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fakeedge.errors import KeyStoreError
from fakeedge.keys import KeyStore, kid_of

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike


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
    assert store.standby is not None and store.standby.kid not in (old, new)
    assert [k["kid"] for k in doc["keys"]] == [store.standby.kid, new]  # §14.7: always two
    assert store.find(old, 1_800_003_601) is None
    assert store.find(store.standby.kid, 1_800_003_601) is None  # listed, never accepted


def test_corrupt_state_is_a_clear_error(tmp_path: Path) -> None:
    KeyStore(tmp_path, now=1_800_000_000)
    (tmp_path / "state.json").write_text("{")
    with pytest.raises(KeyStoreError) as info:
        KeyStore(tmp_path, now=1_800_000_000)
    assert str(info.value).startswith(f"{tmp_path / 'state.json'}: unreadable key state (")
    assert str(info.value).endswith(f"delete {tmp_path} to start with new keys")


# -- processes sharing one keys_dir (pytest-xdist workers, two edges, `fakeedge keys rotate`) --

NOW = 1_800_000_000
SPAWN = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads or a loop


def _consistent(directory: Path) -> dict[str, Any]:
    """state.json, checked: every key it names is on disk, holds that kid, and nothing else is left."""
    state: dict[str, Any] = json.loads((directory / "state.json").read_text())
    named = {state["current"], state["standby"]} | ({state["previous"]} if state["previous"] else set())
    for kid in named:
        assert kid_of(_load_public(directory / f"{kid}.key")) == kid
        assert (directory / f"{kid}.crt").is_file()
    assert {p.stem for p in directory.glob("*.key")} == named
    assert {p.stem for p in directory.glob("*.crt")} == named
    return state


def _load_public(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(path.read_bytes(), password=None).public_key()


def _next(results: Any, procs: list[Any], deadline: float) -> Any:
    """The next result from the worker processes; fails at once if one of them died."""
    while True:
        try:
            return results.get(timeout=0.2)
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not failed, f"a worker process failed (exit {failed}): see its traceback above"
            assert time.monotonic() < deadline, "the worker processes gave no result in time"


def _start_on_fresh_dirs(root: str, trials: int, barrier: Any, results: Any) -> None:
    for trial in range(trials):
        barrier.wait(timeout=120)  # both processes reach the fresh directory together
        store = KeyStore(Path(root) / f"trial-{trial}", now=NOW)
        results.put((trial, store.current.kid))


def test_two_processes_starting_on_a_fresh_dir_agree(tmp_path: Path) -> None:
    trials = 14
    barrier = SPAWN.Barrier(2)
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=_start_on_fresh_dirs, args=(str(tmp_path), trials, barrier, results)) for _ in "ab"]
    for p in procs:
        p.start()
    kids: dict[int, list[str]] = {t: [] for t in range(trials)}
    deadline = time.monotonic() + 120
    for _ in range(2 * trials):
        trial, kid = _next(results, procs, deadline)
        kids[trial].append(kid)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for trial in range(trials):
        state = _consistent(tmp_path / f"trial-{trial}")
        # one key, the one both processes hold
        assert kids[trial] == [state["current"]] * 2, f"trial {trial}"
        assert state["previous"] is None


def _rotate(directory: str, times: int, results: Any) -> None:
    store = KeyStore(Path(directory), now=NOW)
    for _ in range(times):
        fresh = store.rotate(NOW, grace=3600)
        assert store.previous is not None
        results.put(("rotated", store.previous.kid, fresh.kid))
    results.put(("done", "", ""))


def _read_while_rotating(directory: str, stop: Any, results: Any) -> None:
    loads = refreshes = 0
    store = KeyStore(Path(directory), now=NOW)
    results.put(("reading", "", ""))  # the rotations start now: a reader still starting up read none of them
    while not stop.is_set():
        # a fresh load and a refresh of a loaded store both see a state whose keys exist
        again = KeyStore(Path(directory), now=NOW)
        assert kid_of(again.current.public_key) == again.current.kid
        loads += 1
        if store.refresh():
            refreshes += 1
        assert kid_of(store.current.public_key) == store.current.kid
    results.put(("read", str(loads), str(refreshes)))


def test_concurrent_rotations_keep_one_consistent_chain(tmp_path: Path) -> None:
    first = KeyStore(tmp_path, now=NOW).current.kid
    rotators, times = 3, 3
    results = SPAWN.Queue()
    stop = SPAWN.Event()
    reader = SPAWN.Process(target=_read_while_rotating, args=(str(tmp_path), stop, results))
    reader.start()
    deadline = time.monotonic() + 120
    assert _next(results, [reader], deadline)[0] == "reading"
    procs = [SPAWN.Process(target=_rotate, args=(str(tmp_path), times, results)) for _ in range(rotators)]
    for p in procs:
        p.start()
    rotations: list[tuple[str, str]] = []
    done = 0
    while done < rotators:
        kind, a, b = _next(results, [*procs, reader], deadline)
        if kind == "done":
            done += 1
        else:
            rotations.append((a, b))
    stop.set()
    kind, loads, _ = _next(results, [reader], deadline)
    for p in [*procs, reader]:
        p.join(timeout=60)
        assert p.exitcode == 0, "a process failed: see its traceback above"
    assert kind == "read" and int(loads) > 0
    # each rotation built on the one before it, whichever process made it: one chain, no fork
    successor = dict(rotations)
    assert len(successor) == rotators * times, "two rotations replaced the same key"
    chain = [first]
    while chain[-1] in successor:
        chain.append(successor[chain[-1]])
    assert len(chain) == rotators * times + 1
    state = _consistent(tmp_path)
    assert (state["previous"], state["current"]) == (chain[-2], chain[-1])
    reloaded = KeyStore(tmp_path, now=NOW)
    assert [k.kid for k in reloaded.keys(NOW)] == chain[-2:]


def _rotate_and_hang_in_fsync(directory: str, writing: Any) -> None:
    """Rotate, and stop for good in the middle of writing the new key (to be killed there)."""
    import os as real_os
    import time as real_time

    def hang(fd: FileDescriptorLike) -> None:
        writing.set()
        real_time.sleep(120)

    real_os.fsync = hang  # fault injection: the write never completes
    KeyStore(Path(directory), now=NOW).rotate(NOW, grace=3600)


def test_a_rotation_killed_mid_write_leaves_nothing_behind(tmp_path: Path) -> None:
    first = KeyStore(tmp_path, now=NOW).current.kid
    writing = SPAWN.Event()
    proc = SPAWN.Process(target=_rotate_and_hang_in_fsync, args=(str(tmp_path), writing))
    proc.start()
    try:
        assert writing.wait(timeout=120), "the rotation did not start writing"
    finally:
        proc.kill()  # SIGKILL mid-write: no cleanup runs
        proc.join(timeout=60)
    stale = [p.name for p in tmp_path.glob(".*.tmp")]
    assert len(stale) == 1 and stale[0].endswith(f".key.{proc.pid}.tmp"), stale
    (tmp_path / ".notes.tmp").write_text("not the key store's")
    # the next start (under the lock the killed process no longer holds) removes it
    store = KeyStore(tmp_path, now=NOW)
    assert store.current.kid == first  # the rotation never happened
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == [".notes.tmp"]
    assert _consistent(tmp_path)["current"] == first


def test_a_read_only_keys_dir_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kid = KeyStore(tmp_path / "keys", now=NOW).current.kid
    (tmp_path / "keys" / ".lock").unlink()
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any) -> int:
        # a volume mounted read-only: no file can be created or opened for writing
        if Path(path).parent == tmp_path / "keys" and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: not (mode & os.W_OK))
    assert KeyStore(tmp_path / "keys", now=NOW).current.kid == kid


def test_a_fresh_store_lists_two_keys_and_signs_with_the_current_one(tmp_path: Path) -> None:
    # spec §14.7: certs always list two keys, previous then current, also on a fresh account
    store = KeyStore(tmp_path, now=NOW)
    assert store.standby is not None and store.standby.kid != store.current.kid
    doc = json.loads(store.certs_document(NOW))
    assert [k["kid"] for k in doc["keys"]] == [store.standby.kid, store.current.kid]
    assert doc["public_cert"]["kid"] == store.current.kid
    assert [k.kid for k in store.keys(NOW)] == [store.current.kid]  # the standby key never verifies
    assert _consistent(tmp_path)["standby"] == store.standby.kid
    again = KeyStore(tmp_path, now=NOW).standby
    assert again is not None and again.kid == store.standby.kid  # kept across restarts


def test_a_store_from_before_the_standby_key_gets_one(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, now=NOW)
    assert store.standby is not None
    state = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / f"{state.pop('standby')}.key").unlink()
    (tmp_path / f"{store.standby.kid}.crt").unlink()
    (tmp_path / "state.json").write_text(json.dumps(state))  # as an older fakeedge wrote it
    again = KeyStore(tmp_path, now=NOW)
    assert again.current.kid == store.current.kid
    assert again.standby is not None and again.standby.kid not in (store.current.kid, store.standby.kid)
    assert len(json.loads(again.certs_document(NOW))["keys"]) == 2
    assert _consistent(tmp_path)["standby"] == again.standby.kid
