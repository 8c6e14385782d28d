"""``fakeedge health`` (the image's health check) against real edges: plain, TLS-only, down, wrong CA."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from fakeedge.cli import main
from fakeedge.tls import ca_path

from .conftest import RunningEdge, base_config
from .tls_support import MakeTLSEdge, make_tls_edge

__all__ = ["make_tls_edge"]  # the fixture


def write_config(tmp_path: Path, raw: dict[str, Any], **overrides: Any) -> Path:
    path = tmp_path / "health.yml"
    path.write_text(yaml.safe_dump({**raw, **overrides}))
    return path


async def health(path: Path) -> tuple[int, str, str]:
    """Run the command in a thread: it blocks on a socket the edge on this loop must answer."""
    result = await asyncio.to_thread(CliRunner().invoke, main, ["health", "--config", str(path)])
    return result.exit_code, result.stdout, result.stderr


def free_port() -> int:
    """A port nothing listens on: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_healthy_on_the_plain_listener_a_wildcard_read_on_loopback(
    make_edge: Callable[..., Awaitable[RunningEdge]], tmp_path: Path
) -> None:
    edge = await make_edge(base_config("http://127.0.0.1:1"))
    raw = {**base_config("http://127.0.0.1:1"), "keys_dir": str(edge.config.keys_dir)}
    path = write_config(tmp_path, raw, listen=f"0.0.0.0:{edge.port}")
    assert await health(path) == (
        0,
        f"fakeedge: healthy: http://127.0.0.1:{edge.port}/cdn-cgi/access/certs: 2 key(s)\n",
        "",
    )


async def test_unhealthy_when_nothing_listens(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, base_config("http://127.0.0.1:1"), listen=f"127.0.0.1:{port}")
    assert await health(path) == (
        1,
        "",
        f"fakeedge: error: http://127.0.0.1:{port}/cdn-cgi/access/certs: [Errno 111] Connection refused\n",
    )


async def test_unhealthy_when_the_port_is_not_an_edge(tmp_path: Path) -> None:
    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_found, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        path = write_config(tmp_path, base_config("http://127.0.0.1:1"), listen=f"127.0.0.1:{port}")
        assert await health(path) == (
            1,
            "",
            f"fakeedge: error: http://127.0.0.1:{port}/cdn-cgi/access/certs: HTTP 404, expected 200\n",
        )


def tls_only(origin: str) -> dict[str, Any]:
    return {
        **base_config(origin),
        "team": "acme",
        "team_domain": "https://acme.cloudflareaccess.com",
        "listen": False,
        "tls_listen": "127.0.0.1:0",
    }


async def test_tls_only_is_read_as_the_team_domain_trusting_the_local_ca(
    make_tls_edge: MakeTLSEdge, tmp_path: Path
) -> None:
    edge = await make_tls_edge(tls_only("http://127.0.0.1:1"), plain=False)
    raw = {**tls_only("http://127.0.0.1:1"), "keys_dir": str(edge.edge.config.keys_dir)}
    path = write_config(tmp_path, raw, tls_listen=f"127.0.0.1:{edge.tls_port}")
    assert await health(path) == (
        0,
        f"fakeedge: healthy: https://127.0.0.1:{edge.tls_port}/cdn-cgi/access/certs as acme.cloudflareaccess.com:"
        f" 2 key(s)\n",
        "",
    )
    # another edge's CA (a keys_dir of its own) does not vouch for this one
    other = write_config(
        tmp_path, {**raw, "keys_dir": str(tmp_path / "other")}, tls_listen=f"127.0.0.1:{edge.tls_port}"
    )
    other_edge = await make_tls_edge(tls_only("http://127.0.0.1:1"), plain=False, keys_dir=tmp_path / "other")
    assert other_edge.tls_port != edge.tls_port
    code, out, err = await health(other)
    assert (code, out) == (1, "")
    assert err.startswith(
        f"fakeedge: error: https://127.0.0.1:{edge.tls_port}/cdn-cgi/access/certs as acme.cloudflareaccess.com:"
        " [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    ), err


async def test_tls_only_before_the_ca_exists_makes_no_ca(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(
        tmp_path, {**tls_only("http://127.0.0.1:1"), "keys_dir": str(tmp_path / "k")}, tls_listen=f"127.0.0.1:{port}"
    )
    code, out, err = await health(path)
    assert (code, out) == (1, "")
    assert err == (
        f"fakeedge: error: https://127.0.0.1:{port}/cdn-cgi/access/certs as acme.cloudflareaccess.com:"
        f" [Errno 2] No such file or directory\n"
    )
    assert not ca_path(tmp_path / "k").exists()
