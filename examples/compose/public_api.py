"""A public API with no Access app: the edge forwards every request and adds only its own headers."""

from __future__ import annotations

import json
import os
import signal
import threading
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
    serve(ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "3000"))), Handler, bind_and_activate=False))


if __name__ == "__main__":
    main()
