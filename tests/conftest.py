"""Shared fixtures: real origins and real edges on 127.0.0.1, ephemeral ports."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fakeedge.clock import Clock
from fakeedge.config import Config
from fakeedge.edge import Edge
from fakeedge.testing import ConfigInput, FakeEdge, FakeEdgeFactory, _key_template
from fakeedge.web_app import EdgeRunner

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright never downloads a browser here
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    # no background traffic: this network refuses it, and a refused connection is noise in a failure
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
    ),
]

BOT_ID = "2f0e3c7c8d1b4a5e9f6a7b8c9d0e1f2a.access"
BOT_SECRET = "s3cret-bot-value-0123456789abcdef"
OTHER_ID = "99999999999999999999999999999999.access"
OTHER_SECRET = "other-secret-value-0123456789abcd"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    header_items: list[tuple[str, str]]
    body_size: int


@dataclass
class Origin:
    url: str
    port: int
    received: list[Received] = field(default_factory=list)

    @property
    def last(self) -> Received:
        assert self.received, "the origin received nothing"
        return self.received[-1]


origin_key = web.AppKey("origin_key", Origin)


async def _origin_handler(request: web.Request) -> web.StreamResponse:
    origin = request.app[origin_key]
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
    origin.received.append(
        Received(request.method, request.path_qs, dict(request.headers), list(request.headers.items()), size)
    )
    return web.json_response({"path": request.path_qs, "size": size})


MakeOrigin = Callable[..., Awaitable[Origin]]


@pytest.fixture
async def make_origin() -> AsyncIterator[MakeOrigin]:
    """Start recording origins: ``await make_origin(extra_routes)``."""
    runners: list[web.AppRunner] = []

    async def go(setup: Callable[[web.Application], None] | None = None) -> Origin:
        app = web.Application(client_max_size=0)
        origin = app[origin_key] = Origin("", 0)
        if setup is not None:
            setup(app)
        app.router.add_route("*", "/{tail:.*}", _origin_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        origin.port = runner.addresses[0][1]
        origin.url = f"http://127.0.0.1:{origin.port}"
        return origin

    yield go
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def origin(make_origin: MakeOrigin) -> Origin:
    return await make_origin()


def base_config(origin_url: str) -> dict[str, Any]:
    """The config most tests start from: an Admin app, a service-only Sentry app, a public host."""
    return {
        "team": "acme",
        # the legacy service-token behaviour (302s, cookies) most tests were written for; strict
        # mode, the default since 2026-10-05 (spec §14.3), is tested with this key removed or true
        "strict_service_token_auth": False,
        "users": [
            {
                "email": "alice@acme.test",
                "name": "Alice",
                "groups": ["admins"],
                "github_orgs": ["acme"],
                "country": "GB",
            },
            {"email": "bob@acme.test", "name": "Bob"},
            {"email": "octo@github.test", "name": "Octo", "github_orgs": ["acme"]},
            {"email": "mallory@evil.test", "name": "Mallory"},
        ],
        "service_tokens": [
            {"name": "ci-deploy-bot", "client_id": BOT_ID, "client_secret": BOT_SECRET},
            {"name": "other-bot", "client_id": OTHER_ID, "client_secret": OTHER_SECRET},
        ],
        "apps": [
            {
                "name": "Admin",
                "domain": "admin.acme.test",
                "session_duration": "1h",
                "policies": [
                    {
                        "name": "staff",
                        "decision": "allow",
                        "include": [
                            {"email_domain": {"domain": "acme.test"}},
                            {"github-organization": {"name": "acme"}},
                        ],
                    },
                    {
                        "name": "bots",
                        "decision": "non_identity",
                        "include": [{"service_token": {"token_id": "ci-deploy-bot"}}],
                    },
                ],
            },
            {
                "name": "Sentry",
                "domain": "sentry.acme.test",
                "policies": [
                    {
                        "name": "bots",
                        "decision": "Service Auth",
                        "include": [{"service_token": {"token_id": "ci-deploy-bot"}}],
                    }
                ],
            },
            {
                "name": "Grafana",
                "domain": "grafana.acme.test",
                "policies": [
                    {"name": "staff", "decision": "Allow", "include": [{"email_domain": {"domain": "acme.test"}}]}
                ],
            },
        ],
        "ingress": [
            {"hostname": "admin.acme.test", "service": origin_url},
            {"hostname": "sentry.acme.test", "service": origin_url},
            {"hostname": "grafana.acme.test", "service": origin_url},
            {"hostname": "public.acme.test", "service": origin_url},
            {"hostname": "teapot.acme.test", "service": "http_status:418"},
            {"service": "http_status:404"},
        ],
    }


@dataclass(frozen=True)
class RunningEdge:
    """An edge from the public :class:`fakeedge.testing.EdgeFactory` (the ``fakeedge`` fixture)
    and the one anonymous client a test drives it with, keeping its cookies across requests.

    The short names below are the ones the tests were written with; each reads the FakeEdge.
    """

    fake: FakeEdge
    client: aiohttp.ClientSession  # the edge's client(): resolves every name to 127.0.0.1

    @property
    def edge(self) -> Edge:
        return self.fake.core

    @property
    def port(self) -> int:
        return self.fake.port

    @property
    def config(self) -> Config:
        return self.fake.config

    @property
    def clock(self) -> Clock:
        return self.fake.clock

    @property
    def team(self) -> str:
        return self.fake.team_domain

    def url(self, host: str, path: str = "/") -> str:
        return self.fake.url(host, path)

    def aud(self, name: str) -> str:
        return self.fake.aud(name)

    @property
    def runner(self) -> EdgeRunner:
        """The edge's aiohttp runner: for the tests of aiohttp internals (``runner.app[pool_key]``)."""
        assert self.fake._runner is not None
        return self.fake._runner


MakeEdge = Callable[..., Awaitable[RunningEdge]]


@pytest.fixture
async def make_edge(fakeedge: FakeEdgeFactory) -> MakeEdge:
    """Start edges through the ``fakeedge`` fixture: ``await make_edge(cfg, clock=..., keys_dir=...)``.

    Keys: the process's shared test key in a temporary ``keys_dir`` unless the config or
    ``keys_dir=`` names one (tests of keys themselves).
    """

    async def go(raw: ConfigInput, *, clock: Clock | None = None, keys_dir: Path | None = None) -> RunningEdge:
        fake = await fakeedge(raw, clock=clock, keys_dir=keys_dir)
        return RunningEdge(fake, fake.client())

    return go


@pytest.fixture
async def edge(make_edge: MakeEdge, origin: Origin) -> RunningEdge:
    return await make_edge(base_config(origin.url))


def copy_test_key(directory: Path) -> Path:
    """Make ``directory`` a ``keys_dir`` holding this process's test signing key, and return it.

    For edges and CLI commands a test starts by hand (an access log, a subprocess): they load the
    key instead of making two (current and standby); an RSA key costs 50-100 ms, and made per edge
    they were a third of the suite's time (issue 17). Tests of keys themselves make their own.
    """
    shutil.copytree(_key_template().directory, directory)
    return directory


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition (bounded in time), for things with no event to await."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
