"""In-process origins of any Python framework: ASGI apps (FastAPI, Starlette, Django ASGI) and WSGI
apps (Flask, Django), served on 127.0.0.1 for a test's lifetime.

Both kinds are served by uvicorn (WSGI through a2wsgi, the adapter uvicorn and Starlette point to)
on an event loop of their own in a background thread: an origin that blocks its loop (a sync
``PyJWKClient`` call in an ``async def`` endpoint) then cannot stall the edge it is fetching the
certs from. Needs the ``origins`` extra: ``pip install 'fakeedge[origins]'``.

uvicorn is driven below its ``serve()``: ``serve()`` takes over SIGINT/SIGTERM in the main thread
and its ``shutdown()`` sleeps 100 ms. The few uvicorn members used here are checked by
``tests/test_toolkit_origins.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable
from typing import Any, Literal

from .errors import FakeEdgeError

OriginKind = Literal["asgi", "wsgi"]
SHUTDOWN_TIMEOUT = 5.0  # seconds an origin's open connections get to finish at teardown


class Origin:
    """An ASGI or WSGI app marked for fakeedge, for when the kind cannot be told from its signature.

    Args:
        app: the application.
        kind: ``"asgi"`` (an ``async (scope, receive, send)`` callable) or ``"wsgi"`` (an
            ``(environ, start_response)`` callable).
    """

    def __init__(self, app: Callable[..., Any], kind: OriginKind) -> None:
        self.app = app
        self.kind = kind


def asgi(app: Callable[..., Any]) -> Origin:
    """Serve ``app`` as an ASGI app: ``"service": asgi(app)``."""
    return Origin(app, "asgi")


def wsgi(app: Callable[..., Any]) -> Origin:
    """Serve ``app`` as a WSGI app: ``"service": wsgi(app)``."""
    return Origin(app, "wsgi")


def _positional(func: Any) -> int | None:
    """How many positional parameters ``func`` takes (None: cannot tell)."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [p for p in sig.parameters.values() if p.kind in kinds]
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values()):
        return None
    return len(params)


def classify(service: Any) -> OriginKind | Literal["factory"] | None:
    """What an ingress ``service`` object is: an ASGI app, a WSGI app, a factory, or not a callable.

    ``async (scope, receive, send)`` is ASGI; ``(environ, start_response)`` is WSGI; a callable of
    one argument is a factory that gets the running edge. Anything else is ``None``.
    """
    if isinstance(service, Origin):
        return service.kind
    if not callable(service):
        return None
    call = service if inspect.isfunction(service) or inspect.ismethod(service) else type(service).__call__
    arity = _positional(service)
    if arity == 3 and inspect.iscoroutinefunction(call):
        return "asgi"
    if arity == 2:
        return "wsgi"
    if arity == 1:
        return "factory"
    return None


def _require_uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError:
        raise FakeEdgeError(
            "serving an ASGI or WSGI app in-process needs uvicorn and a2wsgi: pip install 'fakeedge[origins]'"
        ) from None
    return uvicorn


class ServedOrigin:
    """An ASGI or WSGI app served by uvicorn on 127.0.0.1 (a free port) from a thread of its own.

    Use :func:`serve_origin`; :meth:`stop` ends the server, then the thread.
    """

    def __init__(self, app: Callable[..., Any], kind: OriginKind) -> None:
        uvicorn = _require_uvicorn()
        self._wsgi: Any = None
        if kind == "wsgi":
            try:
                from a2wsgi import WSGIMiddleware
            except ImportError:
                raise FakeEdgeError(
                    "serving a WSGI app in-process needs a2wsgi: pip install 'fakeedge[origins]'"
                ) from None
            app = self._wsgi = WSGIMiddleware(app)
        # log_config=None: uvicorn would otherwise reconfigure the test run's logging
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, lifespan="auto", log_config=None, access_log=False, interface="asgi3"
        )
        self._server = uvicorn.Server(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fakeedge-origin", daemon=True)
        self.url = ""

    def start(self) -> str:
        """Start serving and return the origin's URL, ``http://127.0.0.1:<port>``."""
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._startup(), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise
        return self.url

    async def _startup(self) -> None:
        server = self._server
        server.config.load()
        server.lifespan = server.config.lifespan_class(server.config)
        try:
            await server.startup()
        except SystemExit:  # uvicorn exits the process when the app's lifespan startup fails
            raise FakeEdgeError("the origin app's lifespan startup failed (its error is logged above)") from None
        await server.on_tick(0)  # the Date header, which uvicorn's main loop would set
        port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _shutdown(self) -> None:
        server = self._server
        for listener in server.servers:
            listener.close()
        for connection in list(server.server_state.connections):
            connection.shutdown()
        # requests in progress finish first (bounded): a WSGI worker thread hands its last chunk
        # to this loop, and would wait forever for a loop stopped under it
        tasks = list(server.server_state.tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                for listener in server.servers:
                    await listener.wait_closed()
        await server.lifespan.shutdown()

    def stop(self) -> None:
        """Stop the server (open connections closed, lifespan shutdown run), then the thread."""
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()
        if self._wsgi is not None:
            # a2wsgi's thread pool lives as long as its middleware: without this every WSGI origin
            # of a long run would leave its idle threads behind; a request still running ends alone
            self._wsgi.executor.shutdown(wait=False, cancel_futures=True)


async def serve_origin(stack: contextlib.AsyncExitStack, app: Callable[..., Any], kind: OriginKind) -> str:
    """Serve ``app`` until ``stack`` closes; return its URL. Awaitable from the edge's loop."""
    origin = ServedOrigin(app, kind)
    url = await asyncio.to_thread(origin.start)
    stack.push_async_callback(asyncio.to_thread, origin.stop)
    return url
