"""``fakeedge ca path``, ``ca env``, ``env`` and ``serve --tls-listen``: output and errors, whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fakeedge.cli import main
from fakeedge.config import default_aud


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "fakeedge.yml"
    path.write_text(
        "team: acme\n"
        "team_domain: https://acme.cloudflareaccess.com\n"
        "tls_listen: 0.0.0.0:443\n"
        "keys_dir: keys\n"
        "apps:\n"
        "  - {name: Admin API, domain: admin.acme.test, policies: []}\n"
        "  - {name: grafana, domain: grafana.acme.test, aud: " + "ab" * 32 + ", policies: []}\n"
    )
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_ca_path_creates_the_ca_once(config_file: Path, tmp_path: Path) -> None:
    code, out, err = run("ca", "path", "--config", str(config_file))
    assert (code, out, err) == (0, f"{tmp_path}/keys/ca-cert/ca.pem\n", "")
    first = (tmp_path / "keys/ca-cert/ca.pem").read_bytes()
    assert run("ca", "path", "--config", str(config_file))[1] == out
    assert (tmp_path / "keys/ca-cert/ca.pem").read_bytes() == first


def test_ca_env(config_file: Path, tmp_path: Path) -> None:
    ca = f"{tmp_path}/keys/ca-cert/ca.pem"
    code, out, _ = run("ca", "env", "--config", str(config_file))
    assert (code, out) == (
        0,
        f"SSL_CERT_FILE={ca}\nREQUESTS_CA_BUNDLE={ca}\nNODE_EXTRA_CA_CERTS={ca}\nCURL_CA_BUNDLE={ca}\n",
    )
    assert run("ca", "env", "--export", "--config", str(config_file))[1].splitlines()[0] == f"export SSL_CERT_FILE={ca}"


def test_env_prints_what_an_origin_needs(config_file: Path) -> None:
    code, out, err = run("env", "--config", str(config_file), "--ca-file", "/etc/fakeedge-ca/ca.pem")
    assert (code, err) == (0, "")
    assert out == (
        "FAKEEDGE_TEAM_DOMAIN=https://acme.cloudflareaccess.com\n"
        "FAKEEDGE_TEAM_HOST=acme.cloudflareaccess.com\n"
        "FAKEEDGE_CERTS_URL=https://acme.cloudflareaccess.com/cdn-cgi/access/certs\n"
        f"FAKEEDGE_AUD_ADMIN_API={default_aud('acme', 'Admin API')}\n"
        f"FAKEEDGE_AUD_GRAFANA={'ab' * 32}\n"
        "SSL_CERT_FILE=/etc/fakeedge-ca/ca.pem\n"
        "REQUESTS_CA_BUNDLE=/etc/fakeedge-ca/ca.pem\n"
        "NODE_EXTRA_CA_CERTS=/etc/fakeedge-ca/ca.pem\n"
        "CURL_CA_BUNDLE=/etc/fakeedge-ca/ca.pem\n"
    )


def test_env_defaults_the_team_domain_to_the_tls_listener(tmp_path: Path) -> None:
    path = tmp_path / "f.yml"
    path.write_text("team: acme\ntls_listen: 0.0.0.0:8443\nkeys_dir: 'my keys'\n")
    code, out, _ = run("env", "--config", str(path))
    assert code == 0
    assert out.splitlines()[:3] == [
        "FAKEEDGE_TEAM_DOMAIN=https://127.0.0.1:8443",
        "FAKEEDGE_TEAM_HOST=127.0.0.1:8443",
        "FAKEEDGE_CERTS_URL=https://127.0.0.1:8443/cdn-cgi/access/certs",
    ]
    assert out.splitlines()[3] == f"SSL_CERT_FILE='{tmp_path}/my keys/ca-cert/ca.pem'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "team: acme\nlisten: 127.0.0.1:0\n",
            "fakeedge: error: {path}: team_domain: is not set and the listener has port 0, so the team domain is "
            "only known once serving; set team_domain or a fixed port\n",
        ),
        (
            "team: acme\napps:\n  - {name: Admin API, domain: a.test, policies: []}\n"
            "  - {name: admin-api, domain: b.test, policies: []}\n",
            "fakeedge: error: {path}: apps[1].name: 'admin-api' and 'Admin API' would both be "
            "FAKEEDGE_AUD_ADMIN_API; rename one\n",
        ),
    ],
    ids=["port-0", "aud-name-collision"],
)
def test_env_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "f.yml"
    path.write_text(text)
    assert run("env", "--config", str(path), "--ca-file", "/ca.pem") == (1, "", message.format(path=path))


def test_serve_refuses_a_bad_tls_listen() -> None:
    code, _, err = run("serve", "--tls-listen", "host:https")
    assert code == 2
    assert err.splitlines()[-1] == (
        "Error: Invalid value for --tls-listen: expected HOST:PORT such as 127.0.0.1:8787, got 'host:https'"
    )


def test_check_lists_the_tls_names(config_file: Path) -> None:
    code, out, _ = run("check", "--config", str(config_file))
    assert code == 0
    assert "  tls 0.0.0.0:443: certificates for acme.cloudflareaccess.com, admin.acme.test, grafana.acme.test\n" in out


def test_env_on_a_plain_http_config_names_no_ca_and_creates_none(tmp_path: Path) -> None:
    # an eval of these lines must not point the shell's HTTPS clients at a CA they do not need
    path = tmp_path / "fakeedge.yml"
    path.write_text("team: acme\nlisten: 127.0.0.1:8787\nkeys_dir: keys\n")
    assert run("env", "--config", str(path), "--export") == (
        0,
        "export FAKEEDGE_TEAM_DOMAIN=http://127.0.0.1:8787\n"
        "export FAKEEDGE_TEAM_HOST=127.0.0.1:8787\n"
        "export FAKEEDGE_CERTS_URL=http://127.0.0.1:8787/cdn-cgi/access/certs\n",
        "",
    )
    assert not (tmp_path / "keys").exists()
    # asked for by name, the CA file is still printed
    assert run("env", "--config", str(path), "--ca-file", "/ca.pem")[1].splitlines()[3] == "SSL_CERT_FILE=/ca.pem"


def test_serve_help_says_what_the_tls_listener_serves() -> None:
    code, out, _ = run("serve", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert (
        "--tls-listen TEXT HOST:PORT of a TLS listener as well, with certificates from the local CA in keys_dir; "
        "overrides `tls_listen`." in text
    )
