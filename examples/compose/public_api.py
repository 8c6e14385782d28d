"""A public API with no Access app: the edge forwards every request and adds only its own headers."""

from __future__ import annotations

import json
import os
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


def main() -> None:
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "3000"))), Handler).serve_forever()


if __name__ == "__main__":
    main()
