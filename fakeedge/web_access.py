"""The access decision for a request to a protected app, turned into 302 / 401 / 403 / forward."""

from __future__ import annotations

import functools
import ipaddress
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import assert_never
from urllib.parse import quote

from aiohttp import web

from . import claims, pages, tokens
from . import headers as h
from .config import App
from .edge import Credential, Edge
from .headers import edge_headers
from .journal import judged, note
from .policy import AppMatch, Facts, Identity, IPAddress, Verdict, decide, normalize_path
from .record import Judged
from .web_request import (
    NO_STORE,
    app_cookie_header,
    client_ip,
    cookie,
    html_answer,
    ray_key,
    redirect,
    scheme,
    set_cookie,
)


@dataclass(slots=True)
class Admission:
    """A request the edge lets through, with what the origin and the client get added.

    Not changed once made; not frozen only because a frozen dataclass's ``__init__`` costs twice
    as much, and one is made per admitted request (issue 16).
    """

    verdict: Verdict
    assertion: str | None = None
    email: str | None = None
    country: str = "US"
    set_cookie: tuple[str, float] | None = None  # (CF_Authorization JWT, expiry) for the client
    credential: Credential | None = None


LOGOUT_PATH = "/cdn-cgi/access/logout"  # on the team domain and every app host (spec §1.9)
SINGLE_HEADER_LIMIT = 4096  # a client id and a secret fit many times over


@dataclass(frozen=True, slots=True)
class _ServiceAuth:
    """What the service-token headers amounted to."""

    present: bool
    token_client_id: str | None = None
    malformed: bool = False


NO_SERVICE_TOKEN = _ServiceAuth(False)
_AUTHENTICATED: dict[str, _ServiceAuth] = {}  # client id -> what its valid headers amount to


def read_service_token(request: web.Request, edge: Edge, app: App) -> _ServiceAuth:
    """The client's service-token credentials (spec §5): two headers, or the app's single header."""
    headers = request.headers
    if (
        h.CLIENT_ID not in headers
        and h.CLIENT_SECRET not in headers
        and (app.read_service_tokens_from_header is None or app.read_service_tokens_from_header not in headers)
    ):
        return NO_SERVICE_TOKEN  # the common case, a browser: no lists built
    ids = request.headers.getall(h.CLIENT_ID, [])
    secrets_ = request.headers.getall(h.CLIENT_SECRET, [])
    single = (
        request.headers.getall(app.read_service_tokens_from_header, []) if app.read_service_tokens_from_header else []
    )
    if not ids and not secrets_ and not single:
        return _ServiceAuth(False)
    if single and (ids or secrets_):
        return _ServiceAuth(True, malformed=True)  # spec §5: both forms at once are rejected (strict)
    if single:
        if len(single) != 1:
            return _ServiceAuth(True, malformed=True)
        if len(single[0]) > SINGLE_HEADER_LIMIT:
            return _ServiceAuth(True, malformed=True)
        try:
            value = json.loads(single[0])
            client_id, secret = value["cf-access-client-id"], value["cf-access-client-secret"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return _ServiceAuth(True, malformed=True)
        if not isinstance(client_id, str) or not isinstance(secret, str):
            return _ServiceAuth(True, malformed=True)
    else:
        if len(ids) != 1 or len(secrets_) != 1:
            return _ServiceAuth(True, malformed=True)  # duplicate or partial headers
        client_id, secret = ids[0], secrets_[0]
    token = edge.service_token(client_id.strip(), secret.strip())
    if token is None:
        return _ServiceAuth(True)
    auth = _AUTHENTICATED.get(token.client_id)
    if auth is None:  # one per configured client id: a frozen dataclass costs ~0.5 µs to make
        if len(_AUTHENTICATED) >= 1024:
            _AUTHENTICATED.clear()
        auth = _AUTHENTICATED[token.client_id] = _ServiceAuth(True, token.client_id)
    return auth


def presented_credential(request: web.Request, edge: Edge, app: App) -> Credential | None:
    """A valid app token for ``app`` from the cookie or ``Cf-Access-Token`` (spec §5, §9.2)."""
    for token in _presented_tokens(request):
        cred = edge.credential(token)
        if cred is None or cred.kind == "org" or app.aud not in cred.auds:
            continue  # expired, revoked, foreign or another app's token: as if absent (spec §13.6)
        if app.enable_binding_cookie and cred.session is not None:
            # spec §1.5: a user's token is only good with its CF_Binding, however it is presented
            binding = cookie(request, h.CF_BINDING)
            if binding is None or not tokens.secrets_equal(binding, binding_value(cred.token)):
                continue
        return cred
    if app.oauth_configuration is not None and app.oauth_configuration.enabled:
        bearer = oauth_bearer(request)
        if bearer is not None:
            return edge.oauth_credential(bearer, app)  # spec §14.2: the opaque token stands for the user
    return None


def oauth_bearer(request: web.Request) -> str | None:
    """The managed-OAuth access token of ``Authorization: Bearer oauth:…`` (spec §2.5), if any."""
    scheme_, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme_.lower() != "bearer" or not token.startswith("oauth:"):
        return None
    return token


def _presented_tokens(request: web.Request) -> Iterator[str]:
    token = cookie(request, h.CF_AUTHORIZATION)
    if token:
        yield token
    token = request.headers.get(h.ACCESS_TOKEN)
    if token:
        yield token


def binding_value(token: str) -> str:
    """The ``CF_Binding`` that goes with an app token: a digest of it, so only the pair works."""
    return claims.app_session_hash("binding:" + token)[:32]


# Requests come from a handful of addresses, and parsing one cost ~2 µs of the ~8 µs check()
# took per request (bench/README.md); address objects are immutable, so sharing them is safe.
_parse_ip = functools.lru_cache(maxsize=256)(ipaddress.ip_address)


def _decided(
    edge: Edge,
    app: App,
    key: tuple[str, str | None, str, str, str | None],
    ip: IPAddress,
    country: str,
    token_client_id: str | None,
    who: Identity | None,
) -> Verdict:
    """The verdict cached under ``key``, or decided and cached: a verdict is good while it is held."""
    verdict = edge.verdicts.peek(key)
    if verdict is None:
        verdict = decide(app, Facts(ip, country, token_client_id), who)
        edge.remember_verdict(key, verdict)
    return verdict


def check(request: web.Request, edge: Edge, match: AppMatch) -> Admission | web.Response:
    """Decide one request to a protected app (spec §6.4)."""
    app = match.app
    ip_text = client_ip(request)
    ip = _parse_ip(ip_text)
    default_country = edge.config.default_country

    service = read_service_token(request, edge, app)
    strict = edge.config.strict_service_token_auth and service.present
    if strict:
        # spec §5: strict mode answers 401 when the token cannot authenticate, 403 when not allowed;
        # Allow policies and cookies play no part and no cookie is returned.
        if service.malformed or service.token_client_id is None:
            judged(request, Judged(None, None, ip, default_country, None, strict=True))
            note(request, "strict service-token auth: the headers are malformed, or the id or secret is wrong")
            return access_denied(request, edge, app, 401)
        # the same verdict as the cached one below for a request without a credential: one key
        token_id = service.token_client_id
        strict_key = (app.aud, None, ip_text, default_country, token_id)
        verdict = _decided(edge, app, strict_key, ip, default_country, token_id, None)
        if verdict.outcome in ("service", "bypass"):
            judged(request, Judged(verdict, None, ip, default_country, service.token_client_id, strict=True))
            return _service_admission(edge, app, verdict, service.token_client_id, set_cookie=False)
        judged(request, Judged(None, None, ip, default_country, service.token_client_id, strict=True))
        note(request, "strict service-token auth: no Service Auth or Bypass policy admits this service token")
        return access_denied(request, edge, app, 403)

    cred = None if service.token_client_id else presented_credential(request, edge, app)
    who: Identity | None = None
    token_client_id = service.token_client_id
    if cred is not None:
        if cred.session is not None:
            who = cred.session.identity
        elif cred.service_token is not None and app.has_identity_policy:
            # spec §5: a service token's JWT works as a session only where an Allow policy exists
            token_client_id = cred.service_token.client_id
    country = who.country if who else default_country
    # the policies are fixed and a session's identity too: the verdict only changes with the
    # non-identity facts, which are part of the key (spec §6.3: those are checked every request)
    key = (app.aud, cred.session.nonce if cred and cred.session else None, ip_text, country, token_client_id)
    verdict = _decided(edge, app, key, ip, country, token_client_id, who)
    # for the journal's reason in words (fakeedge.journal)
    bad_token = service.present and service.token_client_id is None
    judged(request, Judged(verdict, who, ip, country, token_client_id, bad_token))
    match verdict.outcome:
        case "service":
            if token_client_id is None:
                return Admission(verdict, country=country)  # a Service Auth policy on IP alone
            if cred is not None and service.token_client_id is None:
                return Admission(verdict, cred.token, country=country, credential=cred)
            return _service_admission(edge, app, verdict, token_client_id, set_cookie=True)
        case "bypass":
            return Admission(verdict, country=country)
        case "allow":
            assert cred is not None and who is not None
            return Admission(verdict, cred.token, who.email, country, credential=cred)
        case "deny":
            return block(request, edge, app, identity=True, email=who.email if who else None)
        case "login":
            if request.headers.get(h.X_REQUESTED_WITH, "").lower() == "xmlhttprequest":
                note(request, "X-Requested-With: XMLHttpRequest gets 401 rather than the redirect")
                return access_denied(request, edge, app, 401)  # spec §1.7: AJAX gets 401, not a redirect
            return login_redirect(request, edge, app, service_token_status=False)
        case "forbidden":
            if not app.has_identity_policy:
                # spec §1.7: only Service Auth could pass: a hard 403, or 401 when the app asks for it
                return access_denied(request, edge, app, 401 if app.service_auth_401_redirect else 403)
            return block(request, edge, app, identity=False)
        case _:
            assert_never(verdict.outcome)


def _service_admission(edge: Edge, app: App, verdict: Verdict, client_id: str, *, set_cookie: bool) -> Admission:
    token = edge.service_token_by_client_id(client_id)
    jwt, exp = edge.service_jwt(token, app)
    return Admission(verdict, jwt, country=edge.config.default_country, set_cookie=(jwt, exp) if set_cookie else None)


def app_headers(app: App) -> dict[str, str]:
    """The app's AUD and domain, on every Access refusal besides the edge's headers (spec §1.8)."""
    return {h.ACCESS_AUD: app.aud, h.ACCESS_DOMAIN: app.domain}


def refusal_headers(ray: str, app: App) -> dict[str, str]:
    """Headers of every Access refusal: the edge's, no-store, and the app's AUD and domain (spec §1.8)."""
    return {**edge_headers(ray), **NO_STORE, **app_headers(app)}


def is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def answer_preflight(request: web.Request, app: App) -> web.Response:
    """A CORS preflight to a protected app (spec §7.4): Access answers it itself, or refuses it.

    Without ``cors_headers`` it is a 403 even for a signed-in user: browsers never send cookies
    on preflights. With them, the edge echoes the origin and the requested method and headers when
    the configuration allows them, and answers 403 otherwise (Cloudflare's answer there is unknown).
    """
    ray = request[ray_key]
    cors = app.cors_headers
    base = refusal_headers(ray, app)
    if cors is None:
        return web.Response(status=403, headers=base)
    origin = request.headers["Origin"]
    method = request.headers["Access-Control-Request-Method"].upper()
    asked = [
        x.strip().lower() for x in request.headers.get("Access-Control-Request-Headers", "").split(",") if x.strip()
    ]
    allowed = (
        (cors.allow_all_origins or origin in cors.allowed_origins)
        and (cors.allow_all_methods or method in cors.allowed_methods)
        and (cors.allow_all_headers or all(x in cors.allowed_headers for x in asked))
    )
    if not allowed:
        return web.Response(status=403, headers=base)
    headers = {
        **edge_headers(ray),
        "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": method,
    }
    if asked:
        headers["Access-Control-Allow-Headers"] = ", ".join(asked)
    if cors.allow_credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    if cors.max_age is not None:
        headers["Access-Control-Max-Age"] = str(cors.max_age)
    return web.Response(status=200, headers=headers)


def metadata_token(request: web.Request, edge: Edge, match: AppMatch) -> str:
    """The ``cf-access-metadata`` JWT (type ``match``) cloudflared asks for since Aug 2026 (spec §2.5)."""
    return tokens.sign(
        claims.match_claims(
            aud=match.app.aud,
            hostname=request.host.split(":", 1)[0].lower(),
            app_hostname=match.destination.host,
            auth_domain=edge.team_hostname,
            now=int(edge.clock.now()),
        ),
        edge.keys.current,
    )


def login_url(
    request: web.Request, edge: Edge, app: App, path_qs: str, *, service_token_status: bool = False
) -> tuple[str, str]:
    """The team-domain login URL for ``app`` at this request's host, and the new ``CF_AppSession``.

    The signed ``meta`` carries the SHA-256 of that ``CF_AppSession`` (spec §1.2): the login
    refuses a ``meta`` that does not verify, and the callback refuses a browser whose
    ``CF_AppSession`` does not hash to it, so a callback URL is good only in the browser that was
    sent to the login.
    """
    now = int(edge.clock.now())
    app_session = "n" + secrets.token_hex(8)
    meta = tokens.sign(
        claims.meta_claims(
            aud=app.aud,
            hostname=request.host,
            redirect_url=path_qs,
            now=now,
            country=edge.config.default_country,
            app_session=app_session,
            service_token_status=service_token_status,
        ),
        edge.keys.current,
        header={"typ": "JWT", "alg": "RS256", "kid": edge.keys.current.kid},
    )
    # JS encodeURIComponent leaves A-Z a-z 0-9 - _ . ! ~ * ' ( ) unescaped (spec §1.2)
    redirect_url = quote(path_qs, safe="!~*'()")
    location = (
        f"{edge.team_domain}/cdn-cgi/access/login/{request.host}?kid={app.aud}&meta={meta}&redirect_url={redirect_url}"
    )
    return location, app_session


def set_app_session(response: web.StreamResponse, request: web.Request, edge: Edge, app_session: str) -> None:
    """The ``CF_AppSession`` cookie of a redirect to the login (spec §1.2: 24 h, no SameSite)."""
    expires = int(edge.clock.now()) + 86400
    set_cookie(response, h.CF_APP_SESSION, app_session, expires=expires, secure=request.secure, same_site=None)


def login_redirect(request: web.Request, edge: Edge, app: App, *, service_token_status: bool) -> web.Response:
    """The 302 to the team domain's login page, as the real edge sends it (spec §1.2)."""
    location, app_session = login_url(request, edge, app, request.raw_path, service_token_status=service_token_status)
    ray = request[ray_key]
    response = web.Response(
        status=302,
        body=pages.FOUND_BODY,
        content_type="text/html",
        headers={
            "Location": location,
            "Access-Control-Allow-Credentials": "true",
            **NO_STORE,
            **edge_headers(ray),
            # the path Access judged (spec §14.1), never the decoded one: normalised, it holds only
            # URL characters and %XX escapes, so no '"', "\\", space or control ends the quoted-string
            "WWW-Authenticate": (
                f'Cloudflare-Access resource_metadata="{scheme(request)}://{request.host}'
                f'/.well-known/cloudflare-access-protected-resource{normalize_path(request.raw_path.partition("?")[0])}"'
            ),
        },
    )
    set_app_session(response, request, edge, app_session)
    return response


def access_denied(request: web.Request, edge: Edge, app: App, status: int) -> web.Response:
    """A bare 401/403 from the edge with ``cf-access-aud`` / ``cf-access-domain`` (spec §1.7, §1.8)."""
    ray = request[ray_key]
    if status == 403:
        # the same Forbidden page as a block, with its json_data (spec §1.8, §14.7)
        body = pages.forbidden(app.aud, ray, None, edge.config.branding)
    else:
        body = pages.notice("Unauthorized", "Unauthorized. A valid Cloudflare Access credential is required.", ray)
    return html_answer(request, body, status, app_headers(app))


def block(
    request: web.Request,
    edge: Edge,
    app: App,
    *,
    identity: bool,
    host_header: str | None = None,
    email: str | None = None,
) -> web.Response:
    """The 403 block page, or the app's custom deny URL (spec §1.8).

    A refused sign-in (``email`` given) gets a way out: "Sign in as someone else" logs out on
    this host and comes back to the URL that was refused, now without a session, so the sign-in
    page shows instead of the same refusal.
    """
    ray = request[ray_key]
    custom = app.custom_deny_url if identity else app.custom_non_identity_deny_url
    if custom:
        return redirect(request, custom, headers=app_headers(app))
    switch_url = None
    if email is not None:
        switch_url = f"{LOGOUT_PATH}?redirect_url={quote(request.path_qs, safe='')}"
    page = pages.forbidden(
        app.aud, ray, app.custom_deny_message, edge.config.branding, email=email, switch_url=switch_url
    )
    return html_answer(request, page, 403, app_headers(app))


def app_cookies(request: web.Request, app: App, jwt: str, exp: float) -> list[tuple[str, str]]:
    """The app's ``CF_Authorization`` (and ``CF_Binding``) Set-Cookie headers (spec §1.5)."""
    path = cookie_path(app)
    out = [
        ("Set-Cookie", app_cookie_header(h.CF_AUTHORIZATION, jwt, app, expires=exp, secure=request.secure, path=path))
    ]
    if app.enable_binding_cookie:
        value = binding_value(jwt)
        out.append(
            ("Set-Cookie", app_cookie_header(h.CF_BINDING, value, app, expires=exp, secure=request.secure, path=path))
        )
    return out


def cookie_path(app: App) -> str:
    """The app cookie's ``Path`` with ``path_cookie_attribute``: the app's first path, cut before a ``*``."""
    for dest in app.destinations:
        if dest.path and "*" not in dest.path:
            return dest.path
        if dest.path:
            return dest.path.split("*", 1)[0].rsplit("/", 1)[0] or "/"
    return "/"
