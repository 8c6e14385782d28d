"""The pytest plugin: the ``fakeedge`` fixture, a factory of edges running in-process.

pytest loads this module through the ``pytest11`` entry point in every run of every project
where fakeedge is installed, with the ``[pytest]`` extra or without it. So at import time it
loads pytest (already loaded) and pytest-asyncio if present (pytest loads it anyway), and
nothing else: aiohttp, PyJWT, cryptography and fakeedge's own modules are imported when a test
first asks for the fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .testing import FakeEdgeFactory

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
