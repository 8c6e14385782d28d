"""The pytest plugin: the ``fakeedge`` fixture, a factory of edges running in-process.

pytest loads this module through the ``pytest11`` entry point in every run of every project
where fakeedge is installed, with the ``[pytest]`` extra or without it. So at import time it
loads pytest (already loaded) and pytest-asyncio if present (pytest loads it anyway), and
nothing else: aiohttp, PyJWT, cryptography and fakeedge's own modules are imported when a test
first asks for the fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .testing import FakeEdgeFactory
    from .testing_sync import SyncEdgeFactory

_async_fixture: Callable[..., Any] | None
try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the [pytest] extra is not installed
    _async_fixture = None
else:
    _async_fixture = pytest_asyncio.fixture


if _async_fixture is not None:

    @_async_fixture
    async def fakeedge() -> AsyncIterator[FakeEdgeFactory]:
        """Start Cloudflare edges with Access in front of your origins: ``edge = await fakeedge(config=...)``.

        ``config`` is a mapping in the YAML's structure or the path of a YAML file; an ingress
        ``service`` may be an ``aiohttp.web.Application``, or a callable taking the running edge
        and returning one. The edge listens on 127.0.0.1 (a free port) and offers ``url()``, ``team_domain``, ``aud()``, ``login()``, ``service_token()``,
        ``mint()``, ``rotate_keys()``, ``certs_fault()``, ``clock`` and ``requests``. Everything it
        started is closed after the test, last started first.
        """
        from .testing import EdgeFactory

        async with EdgeFactory() as factory:
            yield factory

else:  # pragma: no cover

    @pytest.fixture
    def fakeedge() -> None:
        """Needs pytest-asyncio: ``pip install pytest-aiohttp`` (fakeedge's ``[pytest]`` extra)."""
        pytest.fail("the fakeedge fixture needs pytest-asyncio: pip install pytest-aiohttp", pytrace=False)


# --- synchronous edges -------------------------------------------------------------------------

# module- and session-wide edges, reset after every test while they run (pytest_runtest_teardown)
_SHARED: list[SyncEdgeFactory] = []


def _sync_factory(shared: bool) -> Iterator[SyncEdgeFactory]:
    from .testing_sync import SyncEdgeFactory

    factory = SyncEdgeFactory()
    if shared:
        _SHARED.append(factory)
    try:
        yield factory
    finally:
        if shared:
            _SHARED.remove(factory)
        factory.close()


@pytest.fixture
def fakeedge_sync() -> Iterator[SyncEdgeFactory]:
    """Start edges from synchronous tests: ``edge = fakeedge_sync(config)``, closed after the test.

    The edge runs on a background thread; its members are plain calls: ``url()``, ``aud()``,
    ``login()`` (a signed-in ``requests.Session``; ``client="httpx"`` or ``"cookies"``),
    ``service_token()``, ``mint()``, ``rotate_keys()``, ``origin_url()``, ``clock``, ``requests``.
    An ingress ``service`` may be a URL, an ASGI or WSGI app, an aiohttp Application, or a
    callable taking the running edge and returning one.
    """
    yield from _sync_factory(shared=False)


@pytest.fixture(scope="module")
def fakeedge_sync_module() -> Iterator[SyncEdgeFactory]:
    """Like ``fakeedge_sync``, for one edge per test file: start it in a module-scoped fixture.

    Every edge it started is reset (``edge.reset()``) after each test and closed after the module.
    """
    yield from _sync_factory(shared=True)


@pytest.fixture(scope="session")
def fakeedge_sync_session() -> Iterator[SyncEdgeFactory]:
    """Like ``fakeedge_sync``, for one edge per test run: start it in a session-scoped fixture.

    Every edge it started is reset (``edge.reset()``) after each test and closed at the end.
    """
    yield from _sync_factory(shared=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    try:
        return (yield)
    finally:
        # after the test's own fixtures are torn down, before the next test: a shared edge
        # still running is put back as it started
        for factory in _SHARED:
            factory.reset()
