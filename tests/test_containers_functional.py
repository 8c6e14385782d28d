"""The compose stack built and run on a real container engine, end to end (docs/containers.md).

``compose.dev.yml`` is built (fakeedge's image, one image for the Python origins, the Node origin)
and brought up under a project name of its own, fakeedge's 443 published on a free port of
127.0.0.1. Then, from the host: sign-in with a cookie jar and a service token, through fakeedge,
to origins that verify the assertion themselves against https://acme.cloudflareaccess.com by its
real name over TLS; from inside the network: good and broken tokens straight to those origins;
that nothing but fakeedge is published; and that the stack stops at once, each container with 0.

Engine: FAKEEDGE_COMPOSE (the compose command, e.g. ``docker compose`` or a path to
podman-compose) and FAKEEDGE_ENGINE (``docker`` or ``podman``), as ``.ci/containers-setup``
prints them; else a running Docker with Compose v2, or podman-compose on PATH. When CI's setup
failed (FAKEEDGE_CONTAINERS_SETUP_FAILED names its log), every test here fails with that log. Base images come
from FAKEEDGE_PYTHON_BASE / FAKEEDGE_NODE_BASE when set (compose.dev.yml reads them). Without an
engine the module is skipped. It takes one to three minutes (most of it building the images).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fakeedge.testing import browser_login, loopback_session

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.dev.yml"
CONFIG = yaml.safe_load((ROOT / "examples" / "compose" / "fakeedge.yml").read_text())
TOKEN = CONFIG["service_tokens"][0]
TEAM_HOST = "acme.cloudflareaccess.com"
IN_IMAGE_CONFIG = "/etc/fakeedge/fakeedge.yml"
ORIGINS = {"public-api": 3000, "admin-api": 3002, "node-api": 3004}
SERVICES = ("fakeedge", *ORIGINS)
BUILD_TIMEOUT = 1500  # pip and npm from the internet; cached after the first run


def _ok(*argv: str) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_engine() -> tuple[list[str], str] | str:
    """(compose command, engine CLI), or why the module is skipped."""
    if os.environ.get("FAKEEDGE_CONTAINERS_SETUP_FAILED"):
        return ["false"], "false"  # the stack fixture fails with the setup's log
    if os.environ.get("FAKEEDGE_COMPOSE"):
        command = shlex.split(os.environ["FAKEEDGE_COMPOSE"])
        return command, os.environ.get("FAKEEDGE_ENGINE") or ("podman" if "podman" in command[0] else "docker")
    if shutil.which("docker") and _ok("docker", "compose", "version") and _ok("docker", "info"):
        return ["docker", "compose"], "docker"
    if shutil.which("podman-compose") and shutil.which("podman"):
        return ["podman-compose"], "podman"
    return (
        "no container engine: set FAKEEDGE_COMPOSE and FAKEEDGE_ENGINE (.ci/containers-setup prints them),"
        " or run Docker with Compose v2, or put podman-compose on PATH"
    )


ENGINE = find_engine()
pytestmark = pytest.mark.skipif(isinstance(ENGINE, str), reason=ENGINE if isinstance(ENGINE, str) else "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Stack:
    compose: list[str]
    engine: str
    project: str
    port: int  # the host port of fakeedge's 443
    ca: Path  # fakeedge's CA certificate, copied out of its volume
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``compose -p PROJECT -f compose.dev.yml ARGS`` in the checkout."""
        argv = [*self.compose, "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        done = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(
                f"{shlex.join(argv)}: exit {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        return done

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The engine's own CLI (``docker`` or ``podman``)."""
        return subprocess.run([self.engine, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def container(self, service: str) -> str:
        labels = [f"label=com.docker.compose.project={self.project}", f"label=com.docker.compose.service={service}"]
        done = self.cli("ps", "-a", "-q", *(arg for label in labels for arg in ("--filter", label)))
        ids = done.stdout.split()
        assert len(ids) == 1, (service, done.stdout, done.stderr)
        return ids[0]

    def exec(self, service: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.cli("exec", self.container(service), *argv)

    def client_context(self) -> ssl.SSLContext:
        """Trusts fakeedge's CA only (a cafile: no system roots), and checks host names."""
        return ssl.create_default_context(cafile=str(self.ca))

    def https(
        self, host: str, path: str = "/", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        """GET https://HOST/PATH through the published port, as HOST (SNI and Host): status, headers, body."""
        ctx = self.client_context()
        conn = http.client.HTTPSConnection(host, 443, timeout=10)
        conn.sock = ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", self.port), timeout=10), server_hostname=host
        )
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read().decode()
        finally:
            conn.close()


def wait(what: str, probe: Any, timeout: float = 90) -> Any:
    """Call ``probe`` until it returns something true, bounded in time: the engine offers nothing to await."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (OSError, AssertionError, subprocess.SubprocessError, http.client.HTTPException) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not ready after {timeout} s; last: {last!r}")


SERVICE_HEADERS = {"CF-Access-Client-Id": TOKEN["client_id"], "CF-Access-Client-Secret": TOKEN["client_secret"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert not isinstance(ENGINE, str)
    failed = os.environ.get("FAKEEDGE_CONTAINERS_SETUP_FAILED")
    if failed:  # CI meant to run this and could not: a failure, not a skip
        tail = "".join(Path(failed).read_text(errors="replace").splitlines(keepends=True)[-20:])
        pytest.fail(f".ci/containers-setup failed; the end of {failed}:\n{tail}", pytrace=False)
    compose, engine = ENGINE
    port = free_port()
    env = {**os.environ, "FAKEEDGE_HTTPS_PORT": str(port)}
    ca = tmp_path_factory.mktemp("containers") / "ca.pem"
    s = Stack(compose, engine, f"fakeedge-test-{secrets.token_hex(3)}", port, ca, env)
    try:
        s.run("build", timeout=BUILD_TIMEOUT)
        s.run("up", "-d", timeout=300)
        fakeedge = s.container("fakeedge")
        wait(
            "the CA in fakeedge's volume",
            lambda: s.cli("cp", f"{fakeedge}:/var/lib/fakeedge/ca-cert/ca.pem", str(ca)).returncode == 0,
        )
        # every origin answers through the edge (node-api waits for the CA before it starts)
        for host in ("api.acme.test", "admin-api.acme.test", "node-api.acme.test"):
            wait(f"{host} through fakeedge", lambda host=host: s.https(host, "/", SERVICE_HEADERS)[0] == 200)
        yield s
    finally:
        s.run("down", "-v", "-t", "2", timeout=180, check=False)


def test_fakeedge_runs_as_non_root_and_its_health_check_passes(stack: Stack) -> None:
    assert stack.exec("fakeedge", "id", "-u").stdout == "10001\n"
    logs = stack.cli("logs", stack.container("fakeedge"))
    assert "fakeedge: event loop uvloop\n" in logs.stdout + logs.stderr  # the image installs the fast extra
    done = stack.exec("fakeedge", "fakeedge", "health", "--config", IN_IMAGE_CONFIG)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "fakeedge: healthy: http://127.0.0.1:80/cdn-cgi/access/certs: 2 key(s)\n",
        "",
    )


async def test_sign_in_with_a_cookie_jar(stack: Stack) -> None:
    """A browser-like client signs in at the team domain, by its real name on 443, and each app sees the user."""
    async with loopback_session(ssl=stack.client_context(), ports={443: stack.port}) as session:
        resp = await browser_login(session, "https://admin-api.acme.test/deploys", "alice@acme.test")
        assert (resp.status, await resp.json()) == (200, {"service": "admin-api", "user": "alice@acme.test"})
        assert any(c.key == "CF_Authorization" and c["domain"] == "admin-api.acme.test" for c in session.cookie_jar)
        # the second app: silent sign-in from the team domain's session, verified by jose this time
        resp = await browser_login(session, "https://node-api.acme.test/", "nobody@acme.test")
        assert (resp.status, await resp.json()) == (200, {"service": "node-api", "user": "alice@acme.test"})
    async with loopback_session(ssl=stack.client_context(), ports={443: stack.port}) as session:
        resp = await browser_login(session, "https://admin-api.acme.test/deploys", "mallory@evil.test")
        assert resp.status == 403
        assert resp.url.host == TEAM_HOST


def test_service_token_to_the_admin_api(stack: Stack) -> None:
    status, _, body = stack.https("admin-api.acme.test", "/deploys", SERVICE_HEADERS)
    assert (status, json.loads(body)) == (200, {"service": "admin-api", "service_token": TOKEN["client_id"]})
    status, headers, _ = stack.https("admin-api.acme.test", "/deploys")
    assert status == 302
    assert headers["Location"].startswith(f"https://{TEAM_HOST}/cdn-cgi/access/login/admin-api.acme.test?")
    status, _, body = stack.https("api.acme.test", "/hello")
    assert (status, json.loads(body)["service"], json.loads(body)["scheme"]) == (200, "public-api", "https")


# Each origin's own answer, whole, to tokens `fakeedge token` mints in the fakeedge container.
EXPECTED = {
    ("admin-api", "valid"): (200, {"service": "admin-api", "service_token": TOKEN["client_id"]}),
    ("admin-api", "expired"): (401, {"error": "ExpiredSignatureError: Signature has expired"}),
    ("admin-api", "wrong-aud"): (401, {"error": "InvalidAudienceError: Audience doesn't match"}),
    ("admin-api", "foreign-key"): (401, {"error": "InvalidSignatureError: Signature verification failed"}),
    ("admin-api", "tampered"): (401, {"error": "InvalidSignatureError: Signature verification failed"}),
    ("node-api", "valid"): (200, {"service": "node-api", "service_token": TOKEN["client_id"]}),
    ("node-api", "expired"): (401, {"error": 'ERR_JWT_EXPIRED: "exp" claim timestamp check failed'}),
    ("node-api", "wrong-aud"): (401, {"error": 'ERR_JWT_CLAIM_VALIDATION_FAILED: unexpected "aud" claim value'}),
    ("node-api", "foreign-key"): (
        401,
        {"error": "ERR_JWS_SIGNATURE_VERIFICATION_FAILED: signature verification failed"},
    ),
    ("node-api", "tampered"): (401, {"error": "ERR_JWS_SIGNATURE_VERIFICATION_FAILED: signature verification failed"}),
}
APP_OF = {"admin-api": "Admin API", "node-api": "Node API"}

# Run in the public-api container: a client inside the network, sending each token to the origin.
SEND = """
import json, sys, urllib.error, urllib.request
out = []
for token in sys.argv[2:]:
    req = urllib.request.Request(sys.argv[1], headers={"Cf-Access-Jwt-Assertion": token})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            out.append([resp.status, json.loads(resp.read())])
    except urllib.error.HTTPError as err:
        out.append([err.code, json.loads(err.read())])
print(json.dumps(out))
"""


@pytest.mark.parametrize("origin", ["admin-api", "node-api"])
def test_the_origin_verifies_over_tls_inside_the_network(stack: Stack, origin: str) -> None:
    """Good token accepted; expired, wrong-aud, foreign-key and tampered ones refused, by the origin itself."""
    variants = [v for (o, v) in EXPECTED if o == origin]
    tokens = []
    for variant in variants:
        flags = [] if variant == "valid" else [f"--{variant}"]
        minted = stack.exec(
            "fakeedge", "fakeedge", "token", "--config", IN_IMAGE_CONFIG, "--app", APP_OF[origin],
            "--service-token", "ci-deploy", *flags,
        )  # fmt: skip
        assert minted.returncode == 0, minted.stderr
        tokens.append(minted.stdout.strip())
    done = stack.exec("public-api", "python", "-c", SEND, f"http://{origin}:{ORIGINS[origin]}/deploys", *tokens)
    assert done.returncode == 0, done.stderr
    answers = [tuple(a) for a in json.loads(done.stdout)]
    assert dict(zip(variants, answers, strict=True)) == {v: EXPECTED[(origin, v)] for v in variants}


def test_only_fakeedge_is_published_and_on_loopback(stack: Stack) -> None:
    assert stack.cli("port", stack.container("fakeedge")).stdout.split("\n")[0] == f"443/tcp -> 127.0.0.1:{stack.port}"
    for origin, port in ORIGINS.items():
        done = stack.cli("port", stack.container(origin))
        assert done.stdout == "", (origin, done.stdout)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_stop_is_prompt_and_every_container_exits_0(stack: Stack, tmp_path: Path) -> None:
    """Last in the module: it stops the stack (the fixture removes it)."""
    ids = {service: stack.container(service) for service in SERVICES}
    started = time.monotonic()
    stack.run("stop", timeout=120)
    elapsed = time.monotonic() - started
    codes = {s: stack.cli("inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() for s, cid in ids.items()}
    # fakeedge serve handles SIGTERM as PID 1 (graceful shutdown): every container exits 0, well
    # before the engine's SIGKILL
    assert codes == dict.fromkeys(SERVICES, "0")
    assert elapsed < 8, elapsed
