"""``edge.requests``: what the origin received through the edge, and which app and policy let it in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakeedge.config import parse_config
from fakeedge.edge import Edge
from fakeedge.errors import FakeEdgeError
from fakeedge.testing import FakeEdge, FakeEdgeFactory

from .conftest import BOT_ID, base_config
from .origins import config_for, verify, whoami


@pytest.fixture
async def edge(fakeedge: FakeEdgeFactory) -> FakeEdge:
    return await fakeedge(config=config_for(whoami()))


async def test_a_signed_in_request(edge: FakeEdge) -> None:
    client = await edge.login("alice@acme.test", app="Admin")
    assert len(edge.requests) == 0  # the sign-in never reached the origin
    async with client.post(
        edge.url("Admin", "/api/items?page=2"),
        json={"a": 1},
        headers={"Cf-Access-Authenticated-User-Email": "ceo@acme.test"},  # spoofed: the edge strips it
    ) as resp:
        assert resp.status == 200
        ray = resp.headers["CF-Ray"]

    rec = edge.requests.last
    assert (rec.method, rec.host, rec.path) == ("POST", "admin.acme.test", "/api/items?page=2")
    assert (rec.app, rec.policy, rec.decision, rec.ray) == ("Admin", "staff", "allow", ray)
    assert rec.email == "alice@acme.test"
    assert rec.headers.getall("cf-access-authenticated-user-email") == ["alice@acme.test"]
    assert rec.assertion == edge.cookies(client)["CF_Authorization"]
    assert rec.headers["CF-Connecting-IP"] == "127.0.0.1"
    assert rec.claims is not None
    assert rec.claims["email"] == "alice@acme.test"
    assert rec.claims == await verify(
        edge.certs_url, rec.assertion, audience=edge.aud("Admin"), issuer=edge.team_domain
    )


async def test_a_service_token_request_and_a_plain_one(edge: FakeEdge) -> None:
    client = edge.client()
    async with client.get(edge.url("Sentry", "/api/1/store/"), headers=edge.service_token("ci-deploy-bot")) as resp:
        assert resp.status == 200
    async with client.get(edge.url("public.acme.test", "/status")) as resp:
        assert resp.status == 200

    bot, public = edge.requests
    assert (bot.app, bot.policy, bot.decision) == ("Sentry", "bots", "service")
    assert bot.claims is not None
    assert (bot.claims["common_name"], bot.claims["sub"]) == (BOT_ID, "")
    assert bot.email is None
    assert "CF-Access-Client-Secret" not in bot.headers
    assert (public.app, public.policy, public.decision, public.claims) == (None, None, None, None)
    assert public.assertion is None


async def test_what_never_reaches_an_origin_is_not_recorded(edge: FakeEdge) -> None:
    client = edge.client()
    async with client.get(edge.url("Admin"), allow_redirects=False) as resp:
        assert resp.status == 302
    async with client.get(edge.url("teapot.acme.test")) as resp:
        assert resp.status == 418  # an http_status ingress rule: no origin
    assert len(edge.requests) == 0


async def test_json_and_clear(edge: FakeEdge) -> None:
    client = await edge.login("bob@acme.test", app="Grafana")
    async with client.get(edge.url("Grafana", "/d/1")):
        pass
    (entry,) = json.loads(json.dumps(edge.requests.to_json()))
    assert entry["headers"]["cf-access-authenticated-user-email"] == "bob@acme.test"
    assert all(name == name.lower() for name in entry["headers"])
    assert (entry["app"], entry["policy"], entry["decision"], entry["claims"]["email"]) == (
        "Grafana",
        "staff",
        "allow",
        "bob@acme.test",
    )
    edge.requests.clear()
    assert list(edge.requests) == []
    with pytest.raises(AssertionError) as exc:
        _ = edge.requests.last
    assert str(exc.value) == "the origin received nothing through the edge"


async def test_recording_can_be_off(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()), record=False)
    assert edge.core.recorder is None
    with pytest.raises(FakeEdgeError) as exc:
        _ = edge.requests
    assert str(exc.value) == "this edge was started with record=False: it keeps no record of requests"


def test_fakeedge_serve_keeps_the_last_journal_requests(tmp_path: Path) -> None:
    config = parse_config(base_config("http://127.0.0.1:9"), base_dir=tmp_path)
    recorder = Edge.create(config).recorder
    assert recorder is not None and recorder.limit == 1000
    config = parse_config({**base_config("http://127.0.0.1:9"), "journal": 0}, base_dir=tmp_path)
    assert Edge.create(config).recorder is None
