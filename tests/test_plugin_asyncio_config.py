"""The pytest-asyncio misconfigurations users hit with the fakeedge fixture (issue 11), each failing
before any edge starts with a message that says what to change, asserted whole; and the recipes the
messages give, passing."""

from __future__ import annotations

import textwrap

import pytest

from fakeedge.pytest_plugin import NOT_AUTO, SHARED_EDGE

pytest_plugins = ["pytester"]

CONFIG = """
import pytest
import pytest_asyncio

from fakeedge.testing import EdgeFactory, one_app

CONFIG = one_app("http_status:204", "alice@acme.test")
"""


def run(pytester: pytest.Pytester, tests: str, *ini: str) -> pytest.RunResult:
    pytester.makeini("[pytest]\nfilterwarnings = error\n" + "".join(line + "\n" for line in ini))
    pytester.makepyfile(test_user=textwrap.dedent(CONFIG) + textwrap.dedent(tests))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rE")


def errors(result: pytest.RunResult) -> list[str]:
    """The long representations of the setup errors, one line each."""
    lines = result.stdout.lines
    return [lines[i + 1] for i, line in enumerate(lines) if line.startswith("_") and "ERROR at setup of" in line]


def test_strict_mode_without_a_mark(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        async def test_app(fakeedge):
            await fakeedge(CONFIG)
        """,
        "asyncio_default_fixture_loop_scope = function",
    )
    result.assert_outcomes(errors=1)
    assert errors(result) == [
        "fakeedge: test_app is an async test, and pytest-asyncio runs none unmarked in its strict mode: "
        "set asyncio_mode = auto in pytest.ini (or [tool.pytest.ini_options]), or mark the test @pytest.mark.asyncio"
    ]
    assert errors(result) == [NOT_AUTO.format(test="test_app")]


def test_a_session_scoped_loop(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest.mark.asyncio(loop_scope="session")
        async def test_app(fakeedge):
            await fakeedge(CONFIG)
        """,
        "asyncio_mode = auto",
        "asyncio_default_fixture_loop_scope = function",
    )
    result.assert_outcomes(errors=1)
    assert errors(result) == [
        "fakeedge: test_app runs on the session-scoped event loop and the fakeedge fixture on the "
        "function-scoped one; an edge's servers and clients belong to the loop that started them. Give both "
        "the same loop: drop loop_scope from the test's asyncio mark, or set "
        "asyncio_default_fixture_loop_scope = session in pytest.ini"
    ]


def test_a_module_scoped_async_edge(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest_asyncio.fixture(scope="module")
        async def edge(fakeedge):
            return await fakeedge(CONFIG)

        async def test_app(edge):
            pass
        """,
        "asyncio_mode = auto",
        "asyncio_default_fixture_loop_scope = function",
    )
    result.assert_outcomes(errors=1)
    assert errors(result) == [
        "fakeedge: edge (scope module) asks for the fakeedge fixture, which starts one edge per test. For one "
        'edge per module, start it in the fixture and run the tests on its loop: @pytest_asyncio.fixture(scope="module", '
        'loop_scope="module") async def edge(): async with fakeedge.testing.EdgeFactory() as start: yield await '
        'start(config); @pytest.mark.asyncio(loop_scope="module") on the tests and await edge.reset() between them '
        "(docs/testing.md); in sync tests, fakeedge_sync_module"
    ]
    assert errors(result) == [SHARED_EDGE.format(fixture="edge", scope="module")]


def test_the_recipes_the_messages_give_pass(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """

        @pytest_asyncio.fixture(scope="module", loop_scope="module")
        async def edge():
            async with EdgeFactory() as start:
                yield await start(CONFIG)

        @pytest.mark.asyncio(loop_scope="module")
        async def test_one(edge):
            client = await edge.login("alice@acme.test")
            async with client.get(edge.url("App")) as resp:
                assert resp.status == 204
            await edge.reset()

        @pytest.mark.asyncio(loop_scope="module")
        async def test_two(edge):
            async with edge.client().get(edge.url("App"), allow_redirects=False) as resp:
                assert resp.status == 302  # the reset ended test_one's session

        @pytest.mark.asyncio(loop_scope="session")
        async def test_session_loop_matching(fakeedge):
            edge = await fakeedge(CONFIG)
            assert (await edge.login("alice@acme.test")) is not None
        """,
        "asyncio_default_fixture_loop_scope = session",
    )
    result.assert_outcomes(passed=3)
