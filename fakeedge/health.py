"""``fakeedge health``: is the edge described by a config answering? For container health checks.

It reads ``/cdn-cgi/access/certs`` (spec §4) from the plain listener, else from the TLS one as the
team domain's host, trusting the local CA only, so it proves what origins depend on: the edge
answers and its keys (and CA) exist. Standard library only: an image needs no curl.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from urllib.parse import urlsplit

from .config import Config
from .errors import FakeEdgeError

CERTS_PATH = "/cdn-cgi/access/certs"
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def check(config: Config, timeout: float = 3.0) -> str:
    """Fetch the certs from the edge ``config`` describes; return a one-line summary or raise FakeEdgeError."""
    if config.listen is not None:
        host, port = config.listen
        host = _WILDCARDS.get(host, host)
        url = f"http://{_netloc(host, port)}{CERTS_PATH}"
        conn: http.client.HTTPConnection = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        from .tls import ca_path

        assert config.tls_listen is not None  # load_config refuses a config with neither listener
        host, port = config.tls_listen
        host = _WILDCARDS.get(host, host)
        name = urlsplit(config.team_domain).hostname if config.team_domain else None
        name = name or f"{config.team}.cloudflareaccess.com"
        url = f"https://{_netloc(host, port)}{CERTS_PATH} as {name}"
        conn = http.client.HTTPSConnection(name, port, timeout=timeout)
        try:
            # read the CA, never make one: serve makes it before it listens
            ctx = ssl.create_default_context(cafile=str(ca_path(config.keys_dir)))
            # connect to the listener, verify the certificate for the team domain's name (SNI)
            conn.sock = ctx.wrap_socket(socket.create_connection((host, port), timeout=timeout), server_hostname=name)
        except (OSError, ssl.SSLError) as exc:
            raise FakeEdgeError(f"{url}: {exc}") from None
    try:
        conn.request("GET", CERTS_PATH)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise FakeEdgeError(f"{url}: {exc}") from None
    finally:
        conn.close()
    if response.status != 200:
        raise FakeEdgeError(f"{url}: HTTP {response.status}, expected 200")
    try:
        keys = json.loads(body)["keys"]
    except (ValueError, KeyError, TypeError):
        raise FakeEdgeError(f"{url}: expected a JSON object with keys, got {body[:60]!r}") from None
    return f"{url}: {len(keys)} key(s)"


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
