"""The pytest plugin: the ``fakeedge`` fixture, a factory of edges running in-process.

pytest loads this module through the ``pytest11`` entry point in every run of every project
where fakeedge is installed, with the ``[pytest]`` extra or without it. So at import time it
loads pytest (already loaded) and pytest-asyncio if present (pytest loads it anyway), and
nothing else: aiohttp, PyJWT, cryptography and fakeedge's own modules are imported when a test
first asks for the fixture.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .testing import FakeEdgeFactory
    from .testing_sync import SyncEdgeFactory

__all__ = ["fakeedge", "fakeedge_sync", "fakeedge_sync_module", "fakeedge_sync_session"]

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


# --- pytest-asyncio misconfigurations, said in fakeedge's words -----------------------------------

NOT_AUTO = (
    "fakeedge: {test} is an async test, and pytest-asyncio runs none unmarked in its strict mode: "
    "set asyncio_mode = auto in pytest.ini (or [tool.pytest.ini_options]), "
    "or mark the test @pytest.mark.asyncio"
)
OTHER_LOOP = (
    "fakeedge: {test} runs on the {test_scope}-scoped event loop and the fakeedge fixture on the "
    "{fixture_scope}-scoped one; an edge's servers and clients belong to the loop that started them. "
    "Give both the same loop: drop loop_scope from the test's asyncio mark, or set "
    "asyncio_default_fixture_loop_scope = {test_scope} in pytest.ini"
)
SHARED_EDGE = (
    "fakeedge: {fixture} (scope {scope}) asks for the fakeedge fixture, which starts one edge per test. "
    "For one edge per {scope}, start it in the fixture and run the tests on its loop: "
    '@pytest_asyncio.fixture(scope="{scope}", loop_scope="{scope}") '
    "async def {fixture}(): async with fakeedge.testing.EdgeFactory() as start: yield await start(config); "
    '@pytest.mark.asyncio(loop_scope="{scope}") on the tests and await edge.reset() between them '
    "(docs/testing.md); in sync tests, fakeedge_sync_{scope}"
)


def _ini(config: pytest.Config, name: str) -> str | None:
    try:
        value = config.getini(name)
    except ValueError:  # pytest-asyncio is not installed: it registers these
        return None
    return str(value) if value else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the fixtures start: an async test using ``fakeedge`` that pytest-asyncio would not run,
    or would run on another loop than the edge's, fails with what to change."""
    import inspect

    if _async_fixture is None or "fakeedge" not in getattr(item, "fixturenames", ()):
        return
    if not inspect.iscoroutinefunction(getattr(item, "obj", None)):
        return
    marker = item.get_closest_marker("asyncio")
    if marker is None:
        mode = item.config.getoption("asyncio_mode", None) or _ini(item.config, "asyncio_mode") or "strict"
        if mode != "auto":
            pytest.fail(NOT_AUTO.format(test=item.name), pytrace=False)
        return
    test_scope = marker.kwargs.get("loop_scope") or _ini(item.config, "asyncio_default_test_loop_scope") or "function"
    fixture_scope = _ini(item.config, "asyncio_default_fixture_loop_scope") or "function"
    if test_scope != fixture_scope:
        pytest.fail(
            OTHER_LOOP.format(test=item.name, test_scope=test_scope, fixture_scope=fixture_scope), pytrace=False
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A module- or session-scoped fixture asking for ``fakeedge``: pytest's ScopeMismatch, said
    with the fixture that works instead."""
    report = yield
    if call.when == "setup" and call.excinfo is not None and report.failed:
        text = str(call.excinfo.value)
        found = re.search(r"the function scoped fixture fakeedge with a (\w+) scoped request object", text)
        stack = re.search(r"Requesting fixture stack:\n.*?def (\w+)\(", text)
        if found and stack and found.group(1) in ("module", "session", "package", "class"):
            report.longrepr = SHARED_EDGE.format(fixture=stack.group(1), scope=found.group(1))
    return report
