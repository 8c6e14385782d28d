"""The ``fakeedge`` fixture on real sockets: addresses, the real sign-in, service tokens, misuse messages."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from fakeedge import keys
from fakeedge.config import default_aud
from fakeedge.errors import ConfigError, FakeEdgeError, UnknownName
from fakeedge.testing import EdgeFactory, FakeEdge, FakeEdgeFactory, LoginRefused

from .conftest import BOT_ID, BOT_SECRET, MakeEdge, Origin, base_config
from .origins import Verifier, config_for, hits_key, verify, verifying_origin, whoami


async def test_addresses(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()))
    assert edge.team_domain == f"http://127.0.0.1:{edge.port}"
    assert edge.certs_url == f"http://127.0.0.1:{edge.port}/cdn-cgi/access/certs"
    assert edge.url("Admin") == f"http://admin.acme.test:{edge.port}/"
    assert edge.url("Admin", "/api?x=1") == f"http://admin.acme.test:{edge.port}/api?x=1"
    assert edge.url("Public.Acme.test", "/p") == f"http://public.acme.test:{edge.port}/p"
    assert edge.aud("Admin") == default_aud("acme", "Admin")


async def test_login_goes_through_the_real_flow_and_stops_before_the_origin(fakeedge: FakeEdgeFactory) -> None:
    origin = whoami()
    edge = await fakeedge(config=config_for(origin))
    client = await edge.login("alice@acme.test", app="Admin")
    assert origin[hits_key] == []  # the sign-in ended on the callback
    cookies = edge.cookies(client)
    assert list(cookies) == ["CF_Authorization"]

    async with client.get(edge.url("Admin", "/api/me"), allow_redirects=False) as resp:
        assert resp.status == 200
        seen = await resp.json()
    assert seen["email"] == "alice@acme.test"
    assert seen["assertion"] == cookies["CF_Authorization"]
    claims = await verify(edge.certs_url, seen["assertion"], audience=edge.aud("Admin"), issuer=edge.team_domain)
    assert claims["email"] == "alice@acme.test"
    assert claims["country"] == "GB"  # from the persona in the config
    assert origin[hits_key] == ["/api/me"]


async def test_cookies_serve_any_http_client(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()))
    client = await edge.login("bob@acme.test", app="Admin")
    # what requests / httpx do with cookies={...}: a plain client, the edge's address, the app's Host
    async with (
        aiohttp.ClientSession() as plain,
        plain.get(
            f"http://127.0.0.1:{edge.port}/who",
            headers={"Host": edge.host("Admin")},
            cookies=edge.cookies(client),
            allow_redirects=False,
        ) as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["email"] == "bob@acme.test"


async def test_login_with_persona_attributes(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()))
    client = await edge.login("carol@acme.test", app="Grafana", name="Carol", country="de", groups=["ops"])
    async with client.get(edge.url("Grafana", "/cdn-cgi/access/get-identity")) as resp:
        identity = await resp.json()
    assert (identity["name"], identity["geo"], [g["name"] for g in identity["groups"]]) == (
        "Carol",
        {"country": "DE"},
        ["ops"],
    )


async def test_login_with_one_time_pin(fakeedge: FakeEdgeFactory) -> None:
    cfg = config_for(whoami())
    cfg["one_time_pin"] = True
    edge = await fakeedge(config=cfg)
    client = await edge.login("alice@acme.test", app="Admin")
    async with client.get(edge.url("Admin"), allow_redirects=False) as resp:
        assert resp.status == 200


async def test_service_token_headers(fakeedge: FakeEdgeFactory) -> None:
    cfg = config_for(whoami())
    cfg["apps"].append(
        {
            "name": "Hooks",
            "domain": "hooks.acme.test",
            "read_service_tokens_from_header": "Authorization",
            "policies": [{"name": "bots", "decision": "non_identity", "include": [{"any_valid_service_token": {}}]}],
        }
    )
    cfg["ingress"].insert(0, {"hostname": "hooks.acme.test", "service": cfg["ingress"][0]["service"]})
    edge = await fakeedge(config=cfg)
    assert edge.service_token("ci-deploy-bot") == {"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": BOT_SECRET}
    assert edge.service_token(BOT_ID) == edge.service_token("ci-deploy-bot")
    single = edge.service_token("ci-deploy-bot", app="Hooks")
    assert json.loads(single["Authorization"]) == {"cf-access-client-id": BOT_ID, "cf-access-client-secret": BOT_SECRET}

    client = edge.client()
    async with client.get(edge.url("Sentry"), headers=edge.service_token("ci-deploy-bot")) as resp:
        assert resp.status == 200
    async with client.get(edge.url("Hooks"), headers=single, allow_redirects=False) as resp:
        assert resp.status == 200
    async with client.get(edge.url("Sentry"), allow_redirects=False) as resp:
        assert resp.status == 403


async def test_yaml_config_path(fakeedge: FakeEdgeFactory, origin: Origin, tmp_path: Path) -> None:
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump(base_config(origin.url)))
    edge = await fakeedge(config=path)
    client = await edge.login("alice@acme.test", app="Admin")
    async with client.get(edge.url("Admin", "/x")) as resp:
        assert resp.status == 200
    assert origin.last.headers["Cf-Access-Authenticated-User-Email"] == "alice@acme.test"
    assert not (tmp_path / "keys").exists()  # keys go to a temporary directory unless keys_dir says otherwise


async def test_one_application_behind_several_rules_runs_once(fakeedge: FakeEdgeFactory) -> None:
    app = whoami()
    edge = await fakeedge(config=config_for(app))
    services = {rule.service for rule in edge.config.ingress if rule.status is None}
    assert len(services) == 1


async def test_teardown_closes_clients_edge_and_origins() -> None:
    async with EdgeFactory() as start_edge:
        edge = await start_edge(config_for(whoami()))
        client = await edge.login("alice@acme.test", app="Admin")
        origin_url = edge.config.ingress[0].service
    assert client.closed
    async with aiohttp.ClientSession() as probe:
        for url in (edge.team_domain, origin_url):
            with pytest.raises(aiohttp.ClientConnectorError):
                await probe.get(url)


# --- misuse: the messages are part of the interface -----------------------------------------------


async def test_unknown_app_name(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()))
    with pytest.raises(UnknownName) as exc:
        edge.url("Admn")
    assert str(exc.value) == (
        "no app named 'Admn'; did you mean 'Admin'? apps: Admin, Sentry, Grafana "
        "(or pass a host name such as admin.acme.test)"
    )
    with pytest.raises(UnknownName) as exc:
        edge.aud("Nope")
    assert str(exc.value) == "no app named 'Nope' apps: Admin, Sentry, Grafana"
    with pytest.raises(UnknownName) as exc:
        edge.service_token("ci-deploy-bat")
    assert str(exc.value) == (
        "no service token named 'ci-deploy-bat'; did you mean 'ci-deploy-bot'? service tokens: ci-deploy-bot, other-bot"
    )
    with pytest.raises(ValueError, match=r"^path must start with '/', got 'api'$"):
        edge.url("Admin", "api")


async def test_login_refused_by_policy(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()))
    with pytest.raises(LoginRefused) as exc:
        await edge.login("mallory@evil.test", app="Admin")
    assert str(exc.value) == (
        "app 'Admin' refused mallory@evil.test at sign-in (403): no Allow policy includes this identity; "
        "policies: staff (allow), bots (non_identity)"
    )


async def test_login_refused_by_block_policy(fakeedge: FakeEdgeFactory) -> None:
    cfg = config_for(whoami())
    cfg["apps"][0]["policies"].insert(
        0, {"name": "no bob", "decision": "deny", "include": [{"email": {"email": "bob@acme.test"}}]}
    )
    edge = await fakeedge(config=cfg)
    with pytest.raises(LoginRefused) as exc:
        await edge.login("bob@acme.test", app="Admin")
    assert str(exc.value) == (
        "app 'Admin' refused bob@acme.test at sign-in (403): the Block policy 'no bob' matches; "
        "policies: no bob (deny), staff (allow), bots (non_identity)"
    )


async def test_login_to_a_service_only_app(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()))
    with pytest.raises(LoginRefused) as exc:
        await edge.login("alice@acme.test", app="Sentry")
    assert str(exc.value) == (
        f"app 'Sentry' did not send http://sentry.acme.test:{edge.port}/ to sign in: it answered 403, not a 302 "
        "to the team domain; nothing but a service token can reach it (no Allow policy admits a sign-in from "
        "here); policies: bots (non_identity)"
    )


async def test_login_refused_by_the_team_domain(fakeedge: FakeEdgeFactory) -> None:
    cfg = config_for(whoami())
    cfg["allow_any_email"] = False
    edge = await fakeedge(config=cfg)
    with pytest.raises(LoginRefused) as exc:
        await edge.login("zed@acme.test", app="Admin")
    assert str(exc.value) == "the team domain refused zed@acme.test: zed@acme.test is not one of the configured users."
    await edge.login("zed@acme.test", app="Admin", name="Zed")  # a persona makes it a configured user


async def test_login_needs_an_app_when_several_could_sign_in(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()))
    with pytest.raises(UnknownName) as exc:
        await edge.login("alice@acme.test")
    assert (
        str(exc.value) == "login(): name the app to sign in to with app=...; apps with an Allow policy: Admin, Grafana"
    )


async def test_login_persona_mistakes(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()))
    with pytest.raises(TypeError) as type_exc:
        await edge.login("carol@acme.test", app="Admin", contry="DE")
    assert str(type_exc.value) == (
        "login() got unknown persona attribute(s) contry; valid: name, groups, github_orgs, country, amr, idp, custom"
    )
    with pytest.raises(ConfigError) as config_exc:
        await edge.login("carol@acme.test", app="Admin", country="Germany")
    assert str(config_exc.value) == (
        "login('carol@acme.test'): users[0].country: expected an ISO 3166 alpha-2 country code such as US, "
        "got 'Germany'"
    )


async def test_config_mistake_names_the_key(fakeedge: FakeEdgeFactory) -> None:
    cfg = config_for(whoami())
    cfg["apps"][0]["policies"][0]["include"][0] = {"emial": {"email": "a@b.test"}}
    with pytest.raises(ConfigError) as exc:
        await fakeedge(config=cfg)
    assert str(exc.value).startswith(
        "fakeedge(config=...): apps[0].policies[0].include[0]: unknown rule 'emial'; did you mean 'email'?"
    )


async def test_a_service_built_from_the_running_edge(fakeedge: FakeEdgeFactory) -> None:
    """An origin that needs the edge's certs URL, AUD and issuer: a callable service gets the edge."""

    async def origin(edge: FakeEdge) -> web.Application:
        verifier = Verifier(cache_jwk_set=False)
        verifier.point_at(edge.certs_url, audience=edge.aud("Admin"), issuer=edge.team_domain)
        return verifying_origin(verifier)

    edge = await fakeedge(config=config_for(origin))
    client = await edge.login("alice@acme.test", app="Admin")
    async with client.get(edge.url("Admin")) as resp:
        assert (resp.status, (await resp.json())["email"]) == (200, "alice@acme.test")


async def test_a_callable_service_must_make_an_application(fakeedge: FakeEdgeFactory) -> None:
    cfg = config_for(whoami())
    cfg["ingress"][0]["service"] = lambda edge: "http://127.0.0.1:3000"
    with pytest.raises(TypeError) as exc:
        await fakeedge(config=cfg)
    assert str(exc.value) == (
        "ingress[0].service: a callable service must return an aiohttp.web.Application, an ASGI app "
        "(async (scope, receive, send)) or a WSGI app ((environ, start_response)); got str"
    )


async def test_tls_listen_serves_the_real_team_domain_to_login_and_clients(fakeedge: FakeEdgeFactory) -> None:
    # an origin that hard-codes https://acme.cloudflareaccess.com (spec §10): the edge listens as
    # the config says, TLS included, on free ports; its clients trust its CA and send 443 there
    origin = whoami()
    team = "https://acme.cloudflareaccess.com"
    edge = await fakeedge({**config_for(origin), "team_domain": team, "tls_listen": "127.0.0.1:8443"})
    assert edge.tls_port is not None and edge.tls_port not in (8443, edge.port)
    assert edge.ca is not None and edge.ca.cert_path.is_file()
    assert edge.certs_url == f"{team}/cdn-cgi/access/certs"

    client = await edge.login("alice@acme.test", app="Admin")
    async with client.get(edge.url("Admin", "/me"), allow_redirects=False) as resp:
        assert resp.status == 200
        seen = await resp.json()
    assert (seen["path"], seen["email"]) == ("/me", "alice@acme.test")
    team_cookies = {c.key for c in client.cookie_jar if c["domain"] == "acme.cloudflareaccess.com"}
    assert team_cookies == {"CF_Authorization", "CF_Session"}  # the sign-in went through the TLS team domain
    async with edge.client().get(edge.certs_url) as resp:
        assert len((await resp.json())["keys"]) == 2
    with pytest.raises(aiohttp.ClientConnectorCertificateError):  # a client that trusts the system only
        async with aiohttp.ClientSession() as stranger:
            await stranger.get(f"https://127.0.0.1:{edge.tls_port}/cdn-cgi/access/certs")

    tls_only = await fakeedge({**config_for(origin), "listen": False, "tls_listen": "127.0.0.1:8443"})
    assert tls_only.port == tls_only.tls_port
    assert tls_only.url("Admin", "/x") == f"https://admin.acme.test:{tls_only.port}/x"
    client = await tls_only.login("alice@acme.test", app="Admin")
    async with client.get(tls_only.url("Admin", "/x"), allow_redirects=False) as resp:
        assert (resp.status, (await resp.json())["email"]) == (200, "alice@acme.test")


async def test_ssl_context_without_tls_says_what_to_add(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config_for(whoami()))
    assert (edge.tls_port, edge.ca) == (None, None)
    with pytest.raises(FakeEdgeError) as err:
        edge.ssl_context()
    assert str(err.value) == "this edge has no TLS listener: add tls_listen to its config"


async def test_test_edges_load_the_process_key_instead_of_making_keys(
    fakeedge: FakeEdgeFactory, make_edge: MakeEdge, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RSA key generation was a third of the suite's time (issue 17): only the first edge of a
    # process pays for it, and a rotation still makes a key of its own
    first = await fakeedge(config_for(whoami()))
    made: list[float] = []
    real_new_key = keys.new_key

    def counted(now: float) -> keys.SigningKey:
        made.append(now)
        return real_new_key(now)

    monkeypatch.setattr(keys, "new_key", counted)
    second = await fakeedge(config_for(whoami()))
    running = await make_edge(base_config("http://127.0.0.1:9"))
    assert made == []
    assert second.core.keys.current.kid == running.edge.keys.current.kid == first.core.keys.current.kid
    assert second.core.keys.directory != first.core.keys.directory  # a copy each: rotations stay apart
    assert second.rotate_keys() != first.core.keys.current.kid
    assert len(made) == 1
    assert running.edge.keys.current.kid == first.core.keys.current.kid
