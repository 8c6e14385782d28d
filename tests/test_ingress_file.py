"""``ingress_file:`` reads a team's cloudflared config.yml as is (spec §9.1)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from fakeedge.config import load_config
from fakeedge.errors import ConfigError

from .conftest import Origin, RunningEdge

TUNNEL_CONFIG = """\
tunnel: 6ff42ae2-765d-4adf-8112-31c55c1551ef
credentials-file: /root/.cloudflared/6ff42ae2-765d-4adf-8112-31c55c1551ef.json
loglevel: info
originRequest:
  connectTimeout: 10s
  noTLSVerify: true
ingress:
  - hostname: api.verifluence.test
    service: http://api:3000
  - hostname: admin-api.verifluence.test
    service: http://admin-api:3002
    originRequest:
      connectTimeout: 2s
      access: {required: true, teamName: verifluence, audTag: [abc]}
  - hostname: ssh.verifluence.test
    service: ssh://localhost:22
  - service: http_status:404
"""


def write(
    tmp_path: Path, cloudflared: str, fakeedge: str = "team: acme\ningress_file: cloudflared/config.yml\n"
) -> Path:
    (tmp_path / "cloudflared").mkdir(exist_ok=True)
    (tmp_path / "cloudflared" / "config.yml").write_text(cloudflared)
    path = tmp_path / "fakeedge.yml"
    path.write_text(fakeedge)
    return path


def test_a_tunnel_config_routes_as_is(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TUNNEL_CONFIG))
    source = f"{tmp_path}/cloudflared/config.yml"
    assert [(r.hostname, r.service, r.connect_timeout) for r in config.ingress] == [
        ("api.verifluence.test", "http://api:3000", 10.0),  # the top-level originRequest is the default
        ("admin-api.verifluence.test", "http://admin-api:3002", 2.0),  # and a rule's own wins
        ("ssh.verifluence.test", "http_status:502", 10.0),
        (None, "http_status:404", 10.0),
    ]
    assert config.not_emulated == (
        f"{source}: tunnel and credentials-file (fakeedge runs no tunnel; it routes by ingress)",
        f"{source}: loglevel",
        f"{source}: originRequest.noTLSVerify",
        f"{source}: ingress[2].service ssh://localhost:22 (answered with 502)",
        f"{source}: ingress[1].originRequest.access",
    )


def test_an_absolute_ingress_file(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.yml"
    other.write_text("ingress:\n  - service: http://127.0.0.1:9000\n")
    path = tmp_path / "sub" / "fakeedge.yml"
    path.parent.mkdir()
    path.write_text(f"team: acme\ningress_file: {other}\n")
    assert [r.service for r in load_config(path).ingress] == ["http://127.0.0.1:9000"]


@pytest.mark.parametrize(
    ("cloudflared", "message"),
    [
        (
            "ingress:\n  - hostname: app.example.com\n    service: localhost:8000\n  - service: http_status:404\n",
            "{source}: ingress[0].service: expected http://host:port, https://host:port or http_status:<code>, "
            "got 'localhost:8000'",
        ),
        (
            "ingress:\n  - hostname: app.example.com\n    service: http://localhost:8000\n",
            "{source}: ingress[0]: the last ingress rule must match all URLs (no hostname, no path), "
            "e.g. service: http_status:404",
        ),
        ("tunnel: x\n", "{source}: ingress: is required: fakeedge routes by the file's ingress rules"),
        (
            "- service: http_status:404\n",
            "{source}: expected a cloudflared config (a mapping with ingress), got a list",
        ),
        ("ingress: [\n", "{source}: ingress[0]: line 2: expected the node content, but found '<stream end>'"),
        (
            "originRequest: {connectTimeout: soon}\ningress:\n  - service: http_status:404\n",
            "{source}: ingress[0].originRequest.connectTimeout: expected a duration such as 30s, 15m or 24h, "
            "got 'soon'",
        ),
    ],
    ids=["service-without-scheme", "no-catch-all", "no-ingress", "not-a-mapping", "bad-yaml", "bad-default"],
)
def test_errors_name_the_cloudflared_file(tmp_path: Path, cloudflared: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, cloudflared))
    assert str(err.value) == message.format(source=f"{tmp_path}/cloudflared/config.yml")


def test_errors_about_the_key_name_the_fakeedge_file(tmp_path: Path) -> None:
    path = tmp_path / "fakeedge.yml"
    path.write_text("team: acme\ningress_file: missing.yml\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: ingress_file: cannot read {tmp_path}/missing.yml (No such file or directory)"
    path.write_text("team: acme\ningress_file: x.yml\ningress:\n  - service: http_status:404\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: ingress_file: cannot be combined with ingress; keep the rules in one place"


async def test_the_edge_routes_by_the_file(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin, tmp_path: Path
) -> None:
    (tmp_path / "config.yml").write_text(
        f"tunnel: x\ningress:\n  - hostname: api.acme.test\n    service: {origin.url}\n  - service: http_status:404\n"
    )
    (tmp_path / "fakeedge.yml").write_text("team: acme\ningress_file: config.yml\n")  # relative to its folder
    running = await make_edge(tmp_path / "fakeedge.yml")
    resp = await running.client.get(running.url("api.acme.test", "/v1/ping"))
    assert resp.status == 200
    assert origin.last.path == "/v1/ping"
    resp = await running.client.get(running.url("other.acme.test"))
    assert resp.status == 404
