"""A public API with no Access app: the edge forwards every request and adds only its own headers."""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(
            {
                "service": "public-api",
                "path": self.path,
                "scheme": self.headers.get("X-Forwarded-Proto"),
                "client_ip": self.headers.get("CF-Connecting-IP"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(server: ThreadingHTTPServer) -> None:
    """Serve until SIGTERM or SIGINT, then exit 0.

    PID 1 in a container gets no default action for SIGTERM: without a handler ``docker stop``
    waits its 10 s and kills. Requests in flight run in daemon threads and do not hold the exit.
    """

    def stop(signum: int, frame: object) -> None:
        sys.exit(0)  # raised in the main thread, out of serve_forever

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main() -> None:
    serve(ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "3000"))), Handler))


if __name__ == "__main__":
    main()
