"""compose.dev.yml, the Dockerfiles and docs/tls.md agree with each other and with fakeedge.

There is no Docker engine on the machines that run these tests: the files are parsed and checked
for the invariants the stack depends on, and the commands are parsed by fakeedge's own CLI.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from fakeedge.cli import main
from fakeedge.config import Config, load_config
from fakeedge.tls import ca_path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "compose"
ORIGINS = ("public-api", "admin-api")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.dev.yml").read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(EXAMPLE / "fakeedge.yml")


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """target -> (source, read-only) for the short volume syntax ``source:target[:ro]``."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *mode = spec.split(":")
        out[target] = (source, mode == ["ro"])
    return out


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments and blank lines dropped."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(word.upper(), rest.strip()) for word, _, rest in (line.partition(" ") for line in lines)]


def parse_cli(args: list[str]) -> dict[str, Any]:
    """Parse ``fakeedge ARGS`` with the real click commands; unknown commands or options raise."""
    command: click.Command = main
    while isinstance(command, click.Group):
        assert args, "a command is missing"
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"fakeedge has no command {args[0]!r}"
        command, args = sub, args[1:]
    with command.make_context(command.name, list(args)) as ctx:
        return dict(ctx.params)


def test_the_services_and_that_only_fakeedge_publishes_a_port(services: dict[str, Any], config: Config) -> None:
    assert sorted(services) == sorted(["fakeedge", *ORIGINS])
    assert [name for name, service in services.items() if "ports" in service] == ["fakeedge"]
    # the login redirect names the team domain without a port: the host must publish 443 itself
    assert urlsplit(config.team_domain or "").port is None
    assert config.tls_listen is not None
    assert services["fakeedge"]["ports"] == [f"127.0.0.1:443:{config.tls_listen[1]}"]


def test_fakeedge_answers_as_the_team_domain_on_the_network(services: dict[str, Any], config: Config) -> None:
    team_host = urlsplit(config.team_domain or "").hostname
    assert services["fakeedge"]["networks"] == {"edge": {"aliases": [team_host]}}
    for name in ORIGINS:
        assert services[name]["networks"] == ["edge"]
    assert config.team_domain == "https://acme.cloudflareaccess.com"


def test_config_keys_and_ca_are_mounted_where_fakeedge_looks(services: dict[str, Any], config: Config) -> None:
    fakeedge = services["fakeedge"]
    config_path = PurePosixPath(parse_cli(fakeedge["command"])["config_path"])
    raw = yaml.safe_load((EXAMPLE / "fakeedge.yml").read_text())
    assert mounts(fakeedge) == {
        str(config_path): ("./examples/compose/fakeedge.yml", True),
        str(config_path.parent / raw["ingress_file"]): ("./examples/compose/cloudflared.yml", True),
        str(config.keys_dir): ("fakeedge-keys", False),
        str(ca_path(config.keys_dir).parent): ("fakeedge-ca", False),
    }


@pytest.mark.parametrize("name", ORIGINS)
def test_origins_trust_the_ca_alone_and_never_see_the_keys(services: dict[str, Any], name: str) -> None:
    origin = services[name]
    cert = PurePosixPath(origin["environment"]["SSL_CERT_FILE"])
    assert cert.name == ca_path(Path("/k")).name
    assert mounts(origin) == {str(cert.parent): ("fakeedge-ca", True)}
    assert origin["depends_on"] == {"fakeedge": {"condition": "service_healthy"}}


def test_admin_api_is_given_the_team_domain_and_aud_fakeedge_uses(services: dict[str, Any], config: Config) -> None:
    env = services["admin-api"]["environment"]
    assert env["CF_ACCESS_TEAM_DOMAIN"] == urlsplit(config.team_domain or "").hostname
    (app,) = config.apps
    assert env["CF_ACCESS_AUD"] == app.aud
    assert [d.host for d in app.destinations] == ["admin-api.acme.test"]
    assert [p.decision for p in app.policies] == ["allow", "non_identity"]  # staff, and the CI service token


def test_ingress_routes_to_the_services_exposed_ports(services: dict[str, Any], config: Config) -> None:
    routed = {}
    for rule in config.ingress:
        if rule.status is None:
            parts = urlsplit(rule.service)
            assert parts.hostname in services, rule.service
            assert str(parts.port) in services[parts.hostname]["expose"], rule.service
            routed[rule.hostname] = parts.hostname
    assert routed == {"api.acme.test": "public-api", "admin-api.acme.test": "admin-api"}
    assert not any(app for app in config.apps if "api.acme.test" in [d.host for d in app.destinations])
    assert config.not_emulated == (
        f"{EXAMPLE}/cloudflared.yml: tunnel and credentials-file (fakeedge runs no tunnel; it routes by ingress)",
    )


def test_health_check_reads_certs_on_the_plain_listener(services: dict[str, Any], config: Config) -> None:
    test = services["fakeedge"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    url = re.search(r"urlopen\('([^']+)'", test[3])
    assert url is not None
    assert config.listen is not None
    parts = urlsplit(url.group(1))
    assert (parts.hostname, parts.port or 80, parts.path) == ("127.0.0.1", config.listen[1], "/cdn-cgi/access/certs")


def test_the_dockerfile_installs_fakeedge_and_runs_the_compose_command(services: dict[str, Any]) -> None:
    steps = dockerfile(ROOT / "Dockerfile")
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.")
    copied = [src for op, args in steps if op == "COPY" for src in args.split()[:-1]]
    assert copied == ["pyproject.toml", "README.md", "fakeedge"]
    assert all((ROOT / src).exists() for src in copied)
    assert ("RUN", "pip install --no-cache-dir . && rm -rf /src") in steps
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])
    cmd = json.loads(dict(steps)["CMD"])
    assert entrypoint == ["fakeedge"]
    assert cmd == services["fakeedge"]["command"]
    assert parse_cli(cmd) == {
        "config_path": Path("/etc/fakeedge/fakeedge.yml"),
        "listen": None,
        "tls_listen": None,
        "access_log": True,
        "shutdown_timeout": "8s",  # within docker stop's 10 s
    }
    assert set(dict(steps)["EXPOSE"].split()) == {"80", "443"}
    assert (
        ".venv" in (ROOT / ".dockerignore").read_text().split()
        and "keys" in (ROOT / ".dockerignore").read_text().split()
    )


def test_the_origin_image_holds_the_scripts_compose_runs(services: dict[str, Any]) -> None:
    steps = dockerfile(EXAMPLE / "origin.Dockerfile")
    (copy,) = [args.split() for op, args in steps if op == "COPY"]
    *sources, target = copy
    assert all((EXAMPLE / src).is_file() for src in sources)
    for name in ORIGINS:
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]) == EXAMPLE / "origin.Dockerfile"
        python, script = services[name]["command"]
        assert python == "python" and PurePosixPath(script).parent == PurePosixPath(target)
        assert PurePosixPath(script).name in sources
    assert ("USER", "nobody") in steps


def doc_commands() -> list[list[str]]:
    text = (ROOT / "docs" / "tls.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.strip()]


def test_the_docs_run_the_dockerfiles_command_and_valid_fakeedge_commands(services: dict[str, Any]) -> None:
    text = (ROOT / "docs" / "tls.md").read_text()
    steps = dict(dockerfile(ROOT / "Dockerfile"))
    image_command = shlex.join(json.loads(steps["ENTRYPOINT"]) + json.loads(steps["CMD"]))
    assert f"`{image_command}`" in text
    commands = doc_commands()
    assert ["docker", "compose", "-f", "compose.dev.yml", "up", "--build"] in commands
    fakeedge_commands = [argv for argv in commands if argv[0] == "fakeedge"]
    assert len(fakeedge_commands) >= 5
    for argv in fakeedge_commands:
        parse_cli(argv[1:])
    for argv in commands:
        if argv[:4] == ["docker", "compose", "-f", "compose.dev.yml"] and argv[4] == "cp":
            service, _, path = argv[5].partition(":")
            assert service in services
            assert path == str(ca_path(load_config(EXAMPLE / "fakeedge.yml").keys_dir))


def test_the_docs_curl_the_service_token_the_config_defines(config: Config) -> None:
    (token,) = config.service_tokens
    curls = [argv for argv in doc_commands() if argv[0] == "curl"]
    assert any(
        f"CF-Access-Client-Id: {token.client_id}" in argv and f"CF-Access-Client-Secret: {token.client_secret}" in argv
        for argv in curls
    )
