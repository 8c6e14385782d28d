"""In-process origins of other frameworks: a Flask (WSGI) and a FastAPI (ASGI) app, and a Django project
served both ways, each verifying the assertion its own way with PyJWKClient against the served certs,
through the edge and directly."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import flask
import httpx
import jwt
import pytest
import requests
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request

from fakeedge.errors import FakeEdgeError
from fakeedge.origins import ServedOrigin, asgi, classify, wsgi
from fakeedge.testing import FakeEdgeFactory, one_app
from fakeedge.testing_sync import SyncEdge, start_edge

from .django_origin import django_asgi_origin, django_wsgi_origin

ASSERTION = "Cf-Access-Jwt-Assertion"
# PyJWT 2.15 refetches certs for an unknown kid only 30 s after the last fetch; a test cannot wait
JWKS_OPTIONS: dict[str, Any] = {"cooldown_duration": 0}


def flask_origin(edge: Any) -> flask.Flask:
    """A Flask origin as its team would write it: PyJWKClient on the edge's certs, the app's AUD."""
    app = flask.Flask("origin")
    jwks = jwt.PyJWKClient(edge.certs_url, **JWKS_OPTIONS)
    audience, issuer = edge.aud("App"), edge.team_domain

    @app.get("/me")
    def me() -> Any:
        token = flask.request.headers.get(ASSERTION, "")
        try:
            key = jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer)
        except jwt.PyJWTError as exc:
            return flask.jsonify(error=type(exc).__name__, why=str(exc)), 401
        return flask.jsonify(email=claims.get("email"), common_name=claims.get("common_name"), via="flask")

    return app


def fastapi_origin(edge: Any) -> FastAPI:
    """A FastAPI origin verifying in a dependency (sync: FastAPI runs it in its thread pool)."""
    jwks = jwt.PyJWKClient(edge.certs_url, **JWKS_OPTIONS)
    audience, issuer = edge.aud("App"), edge.team_domain

    def claims(request: Request) -> dict[str, Any]:
        token = request.headers.get(ASSERTION, "")
        try:
            key = jwks.get_signing_key_from_jwt(token)
            decoded: dict[str, Any] = jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer)
        except jwt.PyJWTError as exc:
            raise HTTPException(401, type(exc).__name__) from None
        return decoded

    app = FastAPI()

    @app.get("/me")
    def me(c: dict[str, Any] = Depends(claims)) -> dict[str, Any]:  # noqa: B008 - FastAPI's own idiom
        return {"email": c.get("email"), "common_name": c.get("common_name"), "via": "fastapi"}

    return app


ORIGINS = [
    pytest.param((flask_origin, "flask"), id="flask-wsgi"),
    pytest.param((fastapi_origin, "fastapi"), id="fastapi-asgi"),
    pytest.param((django_wsgi_origin, "django"), id="django-wsgi"),
    pytest.param((django_asgi_origin, "django"), id="django-asgi"),
]


@pytest.fixture(params=ORIGINS)
def edge(request: pytest.FixtureRequest) -> Any:
    make, via = request.param
    with start_edge(one_app(make, "alice@acme.test", service_token="ci")) as running:
        running.via = via  # type: ignore[attr-defined]
        yield running


def test_a_signed_in_user_reaches_the_origin_which_verifies_the_assertion(edge: SyncEdge) -> None:
    with edge.login("alice@acme.test") as session:
        resp = session.get(edge.url("App", "/me"))
    assert resp.status_code == 200
    assert resp.json() == {"email": "alice@acme.test", "common_name": None, "via": edge.via}  # type: ignore[attr-defined]
    assert edge.requests.last.policy == "allow"


def test_httpx_and_a_service_token(edge: SyncEdge) -> None:
    with edge.login("alice@acme.test", client="httpx") as client:
        assert client.get(edge.url("App", "/me")).json()["email"] == "alice@acme.test"
    with requests.Session() as plain:
        plain.trust_env = False
        # the edge routes on Host, so a client that cannot resolve app.acme.test goes to 127.0.0.1
        resp = plain.get(
            f"http://127.0.0.1:{edge.port}/me", headers={"Host": "app.acme.test", **edge.service_token("ci")}
        )
    assert resp.status_code == 200
    assert resp.json()["common_name"] == edge.config.service_tokens[0].client_id


def test_the_origin_reached_directly_refuses_what_did_not_come_through_the_edge(edge: SyncEdge) -> None:
    direct = edge.origin_url("App", "/me")
    assert direct.startswith("http://127.0.0.1:")
    assert requests.get(direct, timeout=10).status_code == 401
    expired = edge.mint(email="alice@acme.test", variant="expired")
    resp = requests.get(direct, headers={ASSERTION: expired}, timeout=10)
    assert (resp.status_code, resp.text.count("ExpiredSignatureError")) == (401, 1)
    forged = edge.mint(email="alice@acme.test", variant="foreign_key")
    assert requests.get(direct, headers={ASSERTION: forged}, timeout=10).status_code == 401
    good = edge.mint(email="alice@acme.test")
    resp = requests.get(direct, headers={ASSERTION: good}, timeout=10)
    assert resp.json()["email"] == "alice@acme.test"


def test_after_a_key_rotation_the_origin_fetches_the_new_key(edge: SyncEdge) -> None:
    with edge.login("alice@acme.test") as session:
        assert session.get(edge.url("App", "/me")).status_code == 200
        kid = edge.rotate_keys()
        # the same keep-alive connection again: it must still carry Host: app.acme.test
        assert session.get(edge.url("App", "/me")).status_code == 200
    with edge.login("alice@acme.test") as session:
        # signed with the new key: the origin's PyJWKClient refetches the certs on the unknown kid
        assert session.get(edge.url("App", "/me")).json()["email"] == "alice@acme.test"
    assert jwt.get_unverified_header(edge.requests.last.assertion or "")["kid"] == kid


async def test_the_async_fixture_serves_them_too(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(
        config={
            **one_app(flask_origin, "alice@acme.test"),
            "apps": [
                {
                    "name": "App",
                    "domain": "app.acme.test",
                    "policies": [{"decision": "allow", "include": [{"everyone": {}}]}],
                },
                {
                    "name": "Api",
                    "domain": "api.acme.test",
                    "policies": [{"decision": "allow", "include": [{"everyone": {}}]}],
                },
            ],
            "ingress": [
                {"hostname": "app.acme.test", "service": flask_origin},
                {"hostname": "api.acme.test", "service": fastapi_origin},
                {"service": "http_status:404"},
            ],
        }
    )
    client = await edge.login("bob@acme.test", app="App")
    async with client.get(edge.url("App", "/me")) as resp:
        assert (await resp.json())["via"] == "flask"
    # a blocking PyJWKClient call in the origin cannot stall the edge: origins run on their own loop
    async with httpx.AsyncClient() as direct:
        answer = await direct.get(
            edge.origin_url("App", "/me"), headers={ASSERTION: edge.mint(app="App", email="b@acme.test")}
        )
    assert answer.json()["email"] == "b@acme.test"


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None: ...


def _wsgi_app(environ: Any, start_response: Any) -> Any: ...


class _AsgiClass:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


@pytest.mark.parametrize(
    ("service", "kind"),
    [
        (_asgi_app, "asgi"),
        (_AsgiClass(), "asgi"),
        (FastAPI(), "asgi"),
        (_wsgi_app, "wsgi"),
        (flask.Flask("x"), "wsgi"),
        (lambda edge: None, "factory"),
        (wsgi(_asgi_app), "wsgi"),
        (asgi(_wsgi_app), "asgi"),
        ("http://127.0.0.1:1", None),
        (lambda: None, None),
    ],
    ids=[
        "asgi-function",
        "asgi-class",
        "fastapi",
        "wsgi-function",
        "flask",
        "factory",
        "marked-wsgi",
        "marked-asgi",
        "url",
        "no-args",
    ],
)
def test_classify(service: Any, kind: str | None) -> None:
    assert classify(service) == kind


def test_a_service_of_no_known_kind_is_refused_by_name() -> None:
    config = one_app(lambda: None, "alice@acme.test")
    with pytest.raises(TypeError) as exc:
        start_edge(config)
    assert str(exc.value) == (
        "ingress[0].service: a service must be a URL or an aiohttp.web.Application, an ASGI app "
        "(async (scope, receive, send)) or a WSGI app ((environ, start_response)); got function; "
        "a factory takes one argument, the running edge"
    )


def test_a_failing_lifespan_startup_is_an_error_not_an_exit() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    with pytest.raises(FakeEdgeError) as exc:
        start_edge(one_app(FastAPI(lifespan=lifespan), "alice@acme.test"))
    assert str(exc.value) == "the origin app's lifespan startup failed (its error is logged above)"


def test_lifespan_runs_at_start_and_at_close() -> None:
    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        seen.append("startup")
        yield
        seen.append("shutdown")

    with start_edge(one_app(FastAPI(lifespan=lifespan), "alice@acme.test")):
        assert seen == ["startup"]
    assert seen == ["startup", "shutdown"]


def test_the_uvicorn_members_fakeedge_uses_are_there() -> None:
    # fakeedge/origins.py drives uvicorn below serve(): if this fails, uvicorn changed them
    server = uvicorn.Server(uvicorn.Config(_asgi_app, log_config=None))
    for name in ("startup", "on_tick", "server_state", "config"):
        assert hasattr(server, name), f"uvicorn.Server has no {name!r} any more"
    assert hasattr(server.server_state, "connections") and hasattr(server.server_state, "tasks")
    assert callable(server.config.load)
    origin = ServedOrigin(_asgi_app, "asgi")
    assert origin.start().startswith("http://127.0.0.1:")
    try:
        assert len(origin._server.servers) == 1, "uvicorn.Server.servers after startup() is not the listener any more"
        assert hasattr(origin._server.config, "lifespan_class"), "uvicorn.Config.load() sets no lifespan_class any more"
    finally:
        origin.stop()


def test_a_wsgi_origin_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    for _ in range(2):
        with start_edge(one_app(flask_origin, "alice@acme.test")) as edge, edge.login("alice@acme.test") as session:
            assert session.get(edge.url("App", "/me")).status_code == 200
    left = [t for t in threading.enumerate() if t not in before]
    for thread in left:
        thread.join(5)  # bounded: a stopped pool's idle workers exit at once
    assert [t.name for t in left if t.is_alive()] == []


def test_one_app_needs_someone_to_let_in() -> None:
    with pytest.raises(ValueError) as exc:
        one_app("http://127.0.0.1:1")
    assert str(exc.value) == "one_app(): give addresses or @domains to allow, policies=[...] or service_token=..."
