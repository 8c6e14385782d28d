"""An admin API behind Cloudflare Access that verifies ``Cf-Access-Jwt-Assertion`` as production code does.

Nothing here knows about fakeedge: the keys come from ``https://<team>.cloudflareaccess.com/cdn-cgi/access/certs``
over TLS, and ``iss`` must be exactly that URL (spec §10, the cc-auth / cloudflared way). Only the
environment differs: the team domain resolves to fakeedge, and SSL_CERT_FILE trusts its CA.

Environment: CF_ACCESS_TEAM_DOMAIN (a bare host, default acme.cloudflareaccess.com), CF_ACCESS_AUD
(the Access application's AUD tag), PORT (default 3002).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt


class AccessVerifier:
    """Verifies Access application tokens: RS256 signature by a key from the team's certs, aud, iss, exp."""

    def __init__(self, team_domain: str, aud: str) -> None:
        self.issuer = f"https://{team_domain}"
        self.aud = aud
        self.jwks = jwt.PyJWKClient(f"{self.issuer}/cdn-cgi/access/certs")

    def verify(self, token: str) -> dict[str, Any]:
        key = self.jwks.get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["RS256"], audience=self.aud, issuer=self.issuer)
        return claims


def make_server(host: str, port: int, verifier: AccessVerifier, *, listen: bool = True) -> ThreadingHTTPServer:
    """The HTTP server: 403 without an assertion, 401 with one that does not verify, else who called.

    ``listen=False`` leaves binding and listening to :func:`serve`.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            token = self.headers.get("Cf-Access-Jwt-Assertion")
            if not token:
                return self.reply(403, {"error": "missing Cf-Access-Jwt-Assertion"})
            try:
                claims = verifier.verify(token)
            except jwt.PyJWTError as exc:
                return self.reply(401, {"error": f"{type(exc).__name__}: {exc}"})
            if claims.get("email"):
                return self.reply(200, {"service": "admin-api", "user": claims["email"]})
            return self.reply(200, {"service": "admin-api", "service_token": claims.get("common_name")})

        do_POST = do_GET

        def reply(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return ThreadingHTTPServer((host, port), Handler, bind_and_activate=listen)


def serve(server: ThreadingHTTPServer) -> None:
    """Listen, serve until SIGTERM or SIGINT, then return (exit status 0).

    PID 1 in a container gets no default action for SIGTERM: without a handling ``docker stop``
    waits its 10 s and kills. No Python signal handler runs here: the two signals are blocked before
    the server listens or any thread starts (threads inherit the mask), and the main thread waits for
    them with ``sigwait`` while another thread serves. A handler that raised ``SystemExit`` out of
    ``serve_forever`` interrupted whatever the main thread was doing, once handing a connection to its
    thread (half an error report on stderr, in CI); one that started a thread to call ``shutdown()``
    could deadlock on the lock ``Thread.start`` holds. Requests in flight run in daemon threads and
    do not hold the exit.
    """
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    server.server_bind()
    server.server_activate()
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    serving.start()
    try:
        signal.sigwait(stop)
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    verifier = AccessVerifier(
        os.environ.get("CF_ACCESS_TEAM_DOMAIN", "acme.cloudflareaccess.com"), os.environ["CF_ACCESS_AUD"]
    )
    serve(make_server("0.0.0.0", int(os.environ.get("PORT", "3002")), verifier, listen=False))


if __name__ == "__main__":
    main()
