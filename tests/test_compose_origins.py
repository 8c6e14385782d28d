"""The compose stack's sample origins stop at once, exit status 0, on SIGTERM (``docker stop``) and SIGINT.

As PID 1 in a container a process has no default action for SIGTERM, so an origin that does not
handle it is killed after the stop timeout (10 s). Outside a container the default action kills it
with status -15: either way, only a handler gives 0 at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "compose"
AUD = "b2875977035e3537990b587395c8ce19deb3bd6cc574b45e22fd41c258cd5d4e"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 15.0) -> None:
    """Until the origin accepts a connection (bounded); it installs its handlers before it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the origin did not listen on {port} in {timeout} s")


@pytest.mark.parametrize("script", ["public_api.py", "admin_api.py"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_origin_exits_0_promptly(script: str, signum: signal.Signals) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "CF_ACCESS_AUD": AUD}
    proc = subprocess.Popen([sys.executable, str(EXAMPLE / script)], env=env, stderr=subprocess.PIPE)
    try:
        wait_listening(proc, port)
        # a connection open and idle, as a keep-alive client leaves it, must not hold the exit
        idle = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=10)
        idle.close()
        assert (proc.returncode, stderr) == (0, b"")
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("script", ["public_api.py", "admin_api.py"])
def test_origin_exits_0_quietly_while_connections_arrive(script: str) -> None:
    """A signal that lands while connections arrive and are handed to threads: still 0, quiet, prompt.

    CI once saw the first line of socketserver's error report on stderr when the origins stopped by
    raising ``SystemExit`` from a signal handler; that race was too rare to reproduce here, and the
    origins now run no Python handler at all (``sigwait``). Bounded: 5 rounds of at most 100
    connections. The listen backlog is 5: a connection beyond it waits for the kernel's 1 s SYN retry.
    """
    for _ in range(5):
        port = free_port()
        env = {**os.environ, "PORT": str(port), "CF_ACCESS_AUD": AUD}
        proc = subprocess.Popen([sys.executable, str(EXAMPLE / script)], env=env, stderr=subprocess.PIPE)
        opened: list[socket.socket] = []
        try:
            wait_listening(proc, port)
            for i in range(100):
                if i == 3:
                    proc.send_signal(signal.SIGTERM)
                try:
                    opened.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                except OSError:
                    break  # it has stopped listening
            else:
                raise AssertionError("the origin still listened after 100 connections")
            _, stderr = proc.communicate(timeout=10)
            assert (proc.returncode, stderr) == (0, b"")
        finally:
            for sock in opened:
                sock.close()
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
