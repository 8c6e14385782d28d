"""Instructions per request under callgrind: a deterministic companion to ``bench.py``.

Wall-clock throughput on these VMs drifts 10-30% from run to run, which hides any change below
that. Instruction counts do not drift: the same code, inputs and environment give the same
count. Each front (the minimal proxy, the proxy with the Access wire work, fakeedge) runs alone
under ``valgrind --tool=callgrind`` with instrumentation off; after a warm-up it is switched on
for exactly N sequential keep-alive requests, dumped, and the count divided by N. Only the
front's instructions are counted: the origin and this driver run natively.

Before counting, each front collects its garbage and freezes what is left (``gc.freeze()``): a
full collection walks every object of the process (tens of thousands after start-up, the
journal's records, the caches) and costs ~25M instructions, so whether one falls inside the
counted requests or not moved a path's count by ±25k a request from run to run. Frozen, the
young collections a request's garbage causes are still counted, the full ones cost little, and
with ``PYTHONHASHSEED=0`` the same code counts the same within about 1k.

    apt-get install -y valgrind
    .venv/bin/python bench/instructions.py [--requests 1000] [--loop uvloop]

``x proxy`` is the minimal proxy's count divided by the target's: what the throughput ratio
would be if the front were the only thing on its core.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench as B  # the sibling script, for its servers and config

PORT_TIMEOUT = 240.0  # a Python start under valgrind takes tens of seconds
LOOP = ["asyncio"]  # every front's event loop: --loop


def _settle() -> None:
    """SIGUSR1, once warm: start the counted requests with no garbage and a frozen heap."""
    gc.collect()
    gc.freeze()


async def _serve(kind: str, origin: str, port: int, keys_dir: str) -> None:
    from aiohttp import web

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _settle)
    if kind in ("proxy", "wire-proxy"):
        app = B.minimal_proxy_app(origin, B.WIRE_HEADERS if kind == "wire-proxy" else None)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, B.HOST, port).start()
    else:
        from fakeedge.config import parse_config
        from fakeedge.edge import Edge
        from fakeedge.web_app import AccessLog, start

        ingress = [{"hostname": B.APP_HOST, "service": origin}, {"hostname": B.PUBLIC_HOST, "service": origin}]
        config = parse_config(B.edge_config(origin, Path(keys_dir), [B.APP_HOST], ingress), source="<bench>")
        with open("/dev/null", "w") as devnull:  # the access log on, as in bench.py
            await start(Edge.create(config), B.HOST, port, access_log=AccessLog(devnull))
            await asyncio.Event().wait()
    await asyncio.Event().wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((B.HOST, 0))
        return int(s.getsockname()[1])


def _connect(port: int) -> http.client.HTTPConnection:
    deadline = time.monotonic() + PORT_TIMEOUT
    while True:
        conn = http.client.HTTPConnection(B.HOST, port, timeout=120)
        try:
            conn.connect()
            return conn
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on {B.HOST}:{port} after {PORT_TIMEOUT:.0f}s") from None
            time.sleep(0.5)


def measure(
    kind: str, origin: str, host: str, headers: dict[str, str], n: int, tmp: Path, cookie: bool
) -> tuple[int, dict[str, str]]:
    """Instructions per request of one front, and the headers each request carried."""
    port = _free_port()
    out = tmp / f"cg.{kind}.{host}.%p"
    front = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--serve",
            kind,
            origin,
            str(port),
            str(tmp / "keys"),
            LOOP[0],
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    try:
        conn = _connect(port)
        if cookie:
            headers = {"Cookie": f"CF_Authorization={B.sign_in(port, B.APP_HOST)}"}
        wanted = {"Host": f"{host}:{port}", **headers}

        def go(count: int) -> None:
            for _ in range(count):
                conn.request("GET", "/", headers=wanted)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise SystemExit(f"{kind} {host}: got {resp.status}")

        go(100)  # warm-up: caches, the session's tokens, the upstream connection
        front.send_signal(signal.SIGUSR1)  # _settle
        go(10)
        subprocess.run(["callgrind_control", "-i", "on", str(front.pid)], check=True, capture_output=True, timeout=60)
        go(n)
        subprocess.run(["callgrind_control", "-d", str(front.pid)], check=True, capture_output=True, timeout=120)
        conn.close()
    finally:
        front.terminate()
        front.wait(timeout=120)
    (dump,) = tmp.glob(f"cg.{kind}.{host}.{front.pid}.1")
    for line in dump.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1]) // n, headers
    raise SystemExit(f"no summary in {dump}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        kind, origin, port, keys_dir, loop = sys.argv[2:7]
        with asyncio.Runner(loop_factory=B.loop_factory(loop)) as runner:
            runner.run(_serve(kind, origin, int(port), keys_dir))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per target")
    parser.add_argument(
        "--paths", default="unprotected,cookie,service-token", help="fakeedge paths to measure, comma-separated"
    )
    parser.add_argument("--no-proxy", action="store_true", help="fakeedge only, to iterate on a change quickly")
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind dumps in DIR (for callgrind_annotate)")
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="every front's event loop (default asyncio)"
    )
    args = parser.parse_args()
    LOOP[0] = args.loop
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind: apt-get install -y valgrind")
    started: list[B.Server] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            origin = B.Server.start("origin", "origin", None, None)
            started.append(origin)
            token = {"CF-Access-Client-Id": B.CLIENT_ID, "CF-Access-Client-Secret": B.CLIENT_SECRET}
            # each fakeedge path is compared with the minimal proxy fed the very same request
            # (the same cookie or token headers, which a bare proxy simply forwards)
            rows = [
                ("fakeedge unprotected host", "fakeedge", B.PUBLIC_HOST, {}, False),
                ("fakeedge cookie path", "fakeedge", B.APP_HOST, {}, True),
                ("fakeedge service-token path", "fakeedge", B.APP_HOST, token, False),
            ]
            wanted = args.paths.split(",")
            rows = [row for row in rows if row[0].removeprefix("fakeedge ").removesuffix(" path").split()[0] in wanted]
            table: list[tuple[str, int, int, int]] = []
            wire = (
                0
                if args.no_proxy
                else measure("wire-proxy", origin.url, "x.bench.test", {}, args.requests, tmp, False)[0]
            )
            for name, kind, host, headers, cookie in rows:
                count, sent = measure(kind, origin.url, host, headers, args.requests, tmp, cookie)
                proxy = (
                    count
                    if args.no_proxy
                    else measure("proxy", origin.url, "x.bench.test", sent, args.requests, tmp, False)[0]
                )
                table.append((name, count, proxy, wire))
                print(f"  {name:<30} {count:>9,}   minimal proxy, same request {proxy:>9,}", flush=True)
        finally:
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                for dump in tmp.glob("cg.*"):
                    shutil.copy(dump, Path(args.keep) / f"{dump.name}.{args.loop}")
            for server in started:
                server.stop()
    print(f"\nevent loop of every front: {args.loop}")
    print(f"proxy + Access wire work (no credentials in the request): {wire:,} instructions/request")
    print(f"\n{'target':<30} {'instr/req':>10} {'proxy':>10} {'x proxy':>8}")
    for name, count, proxy, _ in table:
        print(f"{name:<30} {count:>10,} {proxy:>10,} {proxy / count:>8.2f}")


if __name__ == "__main__":
    main()
