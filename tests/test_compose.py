"""compose.dev.yml, the Dockerfiles and docs/containers.md agree with each other and with fakeedge.

Static checks, with no engine: the files are parsed and checked for the invariants the stack
depends on, and the commands are parsed by fakeedge's own CLI. tests/test_containers_functional.py
builds and runs the stack where an engine is installed (CI).
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
ORIGINS = ("public-api", "admin-api", "node-api")
VERIFIERS = {"admin-api": "Admin API", "node-api": "Node API"}  # origins behind Access, and their app
PYTHON_BASE = "docker.io/library/python:3.12-slim-bookworm"
NODE_BASE = "docker.io/library/node:22-bookworm-slim"
INTERPOLATION = re.compile(r"\$\{(\w+):-([^}]*)\}")


def defaults(text: str) -> str:
    """``${VAR:-default}`` as compose reads it with VAR unset."""
    return INTERPOLATION.sub(lambda m: m.group(2), text)


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
    """(INSTRUCTION, arguments) pairs, comments and blank lines dropped, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(word.upper(), " ".join(rest.split())) for word, _, rest in (line.partition(" ") for line in lines)]


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
    # the login redirect names the team domain without a port: by default the host publishes 443
    # itself (another port only for clients that map 443 to it, as the functional test does)
    assert urlsplit(config.team_domain or "").port is None
    assert config.tls_listen is not None
    (port,) = services["fakeedge"]["ports"]
    assert port == f"127.0.0.1:${{FAKEEDGE_HTTPS_PORT:-443}}:{config.tls_listen[1]}"
    assert defaults(port) == "127.0.0.1:443:443"
    for name in ORIGINS:
        assert services[name]["expose"] and "ports" not in services[name]


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
    # Python's ssl reads SSL_CERT_FILE (it replaces the roots); node, NODE_EXTRA_CA_CERTS (it adds)
    variable = "NODE_EXTRA_CA_CERTS" if name == "node-api" else "SSL_CERT_FILE"
    (trust,) = [key for key in origin["environment"] if key in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS")]
    assert trust == variable
    cert = PurePosixPath(origin["environment"][variable])
    assert cert.name == ca_path(Path("/k")).name
    assert mounts(origin) == {str(cert.parent): ("fakeedge-ca", True)}
    assert origin["depends_on"] == {"fakeedge": {"condition": "service_healthy"}}
    assert origin["networks"] == ["edge"]


@pytest.mark.parametrize("name", VERIFIERS)
def test_verifiers_are_given_the_team_domain_and_aud_fakeedge_uses(
    services: dict[str, Any], config: Config, name: str
) -> None:
    env = services[name]["environment"]
    assert env["CF_ACCESS_TEAM_DOMAIN"] == urlsplit(config.team_domain or "").hostname
    (app,) = [app for app in config.apps if app.name == VERIFIERS[name]]
    assert env["CF_ACCESS_AUD"] == app.aud
    assert [d.host for d in app.destinations] == [f"{name}.acme.test"]
    assert [p.decision for p in app.policies] == ["allow", "non_identity"]  # staff, and the CI service token
    assert sorted(a.name for a in config.apps) == sorted(VERIFIERS.values())


def test_ingress_routes_to_the_services_exposed_ports(services: dict[str, Any], config: Config) -> None:
    routed = {}
    for rule in config.ingress:
        if rule.status is None:
            parts = urlsplit(rule.service)
            assert parts.hostname in services, rule.service
            assert str(parts.port) in services[parts.hostname]["expose"], rule.service
            routed[rule.hostname] = parts.hostname
    assert routed == {
        "api.acme.test": "public-api",
        "admin-api.acme.test": "admin-api",
        "node-api.acme.test": "node-api",
    }
    assert not any(app for app in config.apps if "api.acme.test" in [d.host for d in app.destinations])
    assert config.not_emulated == (
        f"{EXAMPLE}/cloudflared.yml: tunnel and credentials-file (fakeedge runs no tunnel; it routes by ingress)",
    )


def test_the_health_check_is_fakeedge_health_on_the_config(services: dict[str, Any], config: Config) -> None:
    fakeedge = services["fakeedge"]
    test = fakeedge["healthcheck"]["test"]
    assert test[:2] == ["CMD", "fakeedge"]
    params = parse_cli(test[2:])
    assert test[2] == "health"
    assert params["config_path"] == parse_cli(fakeedge["command"])["config_path"]
    assert config.listen is not None  # what `fakeedge health` reads first (tests/test_cli_health_functional.py)
    steps = dict(dockerfile(ROOT / "Dockerfile"))
    image_check = steps["HEALTHCHECK"]
    assert image_check.endswith(" CMD " + json.dumps(test[1:]))


def test_the_dockerfile_installs_fakeedge_and_runs_the_compose_command(services: dict[str, Any]) -> None:
    steps = dockerfile(ROOT / "Dockerfile")
    # the base is a build argument with a pinned default, the one compose passes when unset
    assert steps[:2] == [("ARG", f"BASE={PYTHON_BASE}"), ("FROM", "${BASE}")]
    assert services["fakeedge"]["build"] == {
        "context": ".",
        "args": {"BASE": f"${{FAKEEDGE_PYTHON_BASE:-{PYTHON_BASE}}}"},
    }
    copied = [src for op, args in steps if op == "COPY" for src in args.split()[:-1]]
    assert copied == ["pyproject.toml", "README.md", "fakeedge"]
    assert all((ROOT / src).exists() for src in copied)
    (install,) = [args for op, args in steps if op == "RUN"]
    assert install.startswith("pip install --no-cache-dir '.[fast]' && rm -rf /src && useradd --uid 10001 ")  # uvloop
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
        "ready_file": None,
        "ready_json": False,
    }
    assert set(dict(steps)["EXPOSE"].split()) == {"80", "443"}
    assert (
        ".venv" in (ROOT / ".dockerignore").read_text().split()
        and "keys" in (ROOT / ".dockerignore").read_text().split()
    )


def test_the_image_runs_as_non_root_owning_keys_dir_and_may_bind_the_ports(
    services: dict[str, Any], config: Config
) -> None:
    steps = dockerfile(ROOT / "Dockerfile")
    assert ("USER", "10001:10001") in steps
    (install,) = [args for op, args in steps if op == "RUN"]
    assert f"chown 10001:10001 {config.keys_dir} {ca_path(config.keys_dir).parent}" in install
    # the image's folders are what a new named volume copies: owner and mode
    assert f"chmod 0711 {config.keys_dir}" in install
    # a non-root process binds the listeners' ports only from ip_unprivileged_port_start up
    assert config.listen is not None and config.tls_listen is not None
    start = services["fakeedge"]["sysctls"]["net.ipv4.ip_unprivileged_port_start"]
    assert start <= min(config.listen[1], config.tls_listen[1])


def test_one_image_for_the_python_origins(services: dict[str, Any]) -> None:
    steps = dockerfile(EXAMPLE / "origin.Dockerfile")
    assert steps[:2] == [("ARG", f"BASE={PYTHON_BASE}"), ("FROM", "${BASE}")]
    (copy,) = [args.split() for op, args in steps if op == "COPY"]
    *sources, target = copy
    assert all((EXAMPLE / src).is_file() for src in sources)
    public, admin = services["public-api"], services["admin-api"]
    # public-api builds the image; admin-api runs the same one and never pulls it
    assert public["build"] == {
        "context": "examples/compose",
        "dockerfile": "origin.Dockerfile",
        "args": {"BASE": f"${{FAKEEDGE_PYTHON_BASE:-{PYTHON_BASE}}}"},
    }
    assert "build" not in admin
    assert public["image"] == admin["image"] and admin["pull_policy"] == "never"
    for name in ("public-api", "admin-api"):
        python, script = services[name]["command"]
        assert python == "python" and PurePosixPath(script).parent == PurePosixPath(target)
        assert PurePosixPath(script).name in sources
    assert ("USER", "nobody") in steps
    # every image is local: compose must never look for one in a registry
    assert {name: s["pull_policy"] for name, s in services.items()} == dict.fromkeys(services, "never")
    assert all(s["image"].startswith("localhost/") for s in services.values())


def test_the_node_origin_image(services: dict[str, Any]) -> None:
    node = services["node-api"]
    context = ROOT / node["build"]["context"]
    assert node["build"]["args"] == {"BASE": f"${{FAKEEDGE_NODE_BASE:-{NODE_BASE}}}"}
    steps = dockerfile(context / "Dockerfile")
    assert steps[:2] == [("ARG", f"BASE={NODE_BASE}"), ("FROM", "${BASE}")]
    assert ("RUN", "npm ci --omit=dev --no-audit --no-fund && npm cache clean --force") in steps
    assert ("USER", "node") in steps
    copied = [src for op, args in steps if op == "COPY" for src in args.split()[:-1]]
    assert copied == ["package.json", "package-lock.json", "server.mjs"]
    lock = json.loads((context / "package-lock.json").read_text())
    assert list(lock["packages"]) == ["", "node_modules/jose"]  # jose and nothing else
    assert json.loads((context / "package.json").read_text())["dependencies"] == {"jose": "^5.10.0"}
    assert "node_modules" in (context / ".dockerignore").read_text().split()
    # node reads NODE_EXTRA_CA_CERTS once, at start: the command waits for the file, then execs node
    sh, dash_c, script = node["command"]
    assert (sh, dash_c) == ("sh", "-c")
    assert '[ -s "$$NODE_EXTRA_CA_CERTS" ]' in script and script.endswith("; exec node /srv/server.mjs")
    assert json.loads(dict(steps)["CMD"]) == ["node", "/srv/server.mjs"]
    assert str(default_port(context / "server.mjs")) in node["expose"]


def default_port(script: Path) -> int:
    """The port a Node origin listens on without PORT."""
    match = re.search(r"process\.env\.PORT \?\? (\d+)", script.read_text())
    assert match is not None
    return int(match.group(1))


def doc_commands(name: str) -> list[list[str]]:
    text = (ROOT / "docs" / name).read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.strip()]


def test_the_docs_run_the_dockerfiles_command_and_valid_fakeedge_commands(services: dict[str, Any]) -> None:
    text = (ROOT / "docs" / "containers.md").read_text()
    steps = dict(dockerfile(ROOT / "Dockerfile"))
    image_command = shlex.join(json.loads(steps["ENTRYPOINT"]) + json.loads(steps["CMD"]))
    assert f"`{image_command}`" in text
    health = json.loads(steps["HEALTHCHECK"].partition(" CMD ")[2])
    assert f"`{shlex.join(health)}`" in text
    commands = doc_commands("containers.md")
    assert ["docker", "compose", "-f", "compose.dev.yml", "up", "--build"] in commands
    assert ["podman-compose", "-f", "compose.dev.yml", "up", "--build", "-d"] in commands
    fakeedge_commands = [argv for argv in doc_commands("tls.md") if argv[0] == "fakeedge"]
    assert len(fakeedge_commands) >= 5
    for argv in fakeedge_commands:
        parse_cli(argv[1:])
    ca = str(ca_path(load_config(EXAMPLE / "fakeedge.yml").keys_dir))
    copies = 0
    for argv in commands:
        if argv[:4] == ["docker", "compose", "-f", "compose.dev.yml"] and argv[4] in ("cp", "exec"):
            service, _, path = argv[5].partition(":")
            assert service in services
            if argv[4] == "cp":
                copies += 1
                assert path == ca
            else:
                assert argv[6] == "fakeedge"
                parse_cli(argv[7:])
        if argv[:2] == ["podman", "cp"]:
            copies += 1
            assert argv[2] == f"fakeedge-dev_fakeedge_1:{ca}"
        if argv[:2] in (["docker", "run"], ["podman", "run"]):
            assert argv[-1] == "fakeedge:dev"
            assert any(a.endswith(":/etc/fakeedge/fakeedge.yml:ro") for a in argv)
            assert "fakeedge-keys:/var/lib/fakeedge" in argv
    assert copies == 2


def test_the_docs_configs_load(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "containers.md").read_text()
    (block,) = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    (tmp_path / "fakeedge.yml").write_text(block)
    config = load_config(tmp_path / "fakeedge.yml")
    assert (config.listen, config.keys_dir) == (("0.0.0.0", 8787), Path("/var/lib/fakeedge"))
    assert [app.name for app in config.apps] == ["API"] and [t.name for t in config.service_tokens] == ["ci"]


def test_the_docs_curl_the_service_token_the_config_defines(config: Config) -> None:
    (token,) = config.service_tokens
    curls = [argv for argv in doc_commands("containers.md") if argv[0] == "curl"]
    assert any(
        f"CF-Access-Client-Id: {token.client_id}" in argv and f"CF-Access-Client-Secret: {token.client_secret}" in argv
        for argv in curls
    )
