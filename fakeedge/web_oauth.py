"""Managed OAuth on an app's own domains (spec §1.7, §14.2).

A non-browser client without credentials gets ``401`` and a ``WWW-Authenticate: Bearer`` challenge
instead of the login 302; it reads the RFC 9728 protected-resource metadata the challenge names and
the RFC 8414 authorization-server metadata of the app's domain, registers itself (RFC 7591), sends
the person through the ordinary Access sign-in to the authorization endpoint (code + PKCE S256),
and trades the code for an opaque ``oauth:…`` access token and a refresh token. The edge takes the
token as ``Authorization: Bearer`` and sends the origin the usual ``Cf-Access-Jwt-Assertion``.

The sign-in is web_login's unchanged: the authorization endpoint answers a browser without an app
session with the same 302 as any protected URL, so the login comes back to the authorization URL
itself through ``/cdn-cgi/access/authorized`` with the app cookie set, and only then is a code
issued.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import re
import secrets
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from aiohttp import web

from . import oauth, pages
from .config import App
from .edge import Edge
from .oauth import CODE_TTL, Code, Grant
from .policy import Facts, Identity, Verdict, decide
from .web_access import access_denied, app_headers, block, login_redirect, oauth_bearer, presented_credential
from .web_request import client_ip, html_answer, json_answer, ray_key, read_bounded, redirect, scheme

log = logging.getLogger("fakeedge")

RESOURCE_METADATA = "/.well-known/cloudflare-access-protected-resource"  # spec §14.2
RFC9728_METADATA = "/.well-known/oauth-protected-resource"  # clients that ignore the challenge look here
SERVER_METADATA = "/.well-known/oauth-authorization-server"  # RFC 8414 §3 on the app's domain
# The endpoints' paths are not documented; they live under the edge's own /cdn-cgi/ so that no
# origin path is shadowed, and carry no query string (spec §14.2: clients append their own).
AUTHORIZE = "/cdn-cgi/access/oauth/authorization"
TOKEN = "/cdn-cgi/access/oauth/token"
REGISTER = "/cdn-cgi/access/oauth/registration"
PATHS = (RESOURCE_METADATA, RFC9728_METADATA, SERVER_METADATA, "/cdn-cgi/access/oauth/")
BODY_LIMIT = 64 * 1024
REDIRECT_URI_LIMIT = 20
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # BASE64URL(SHA-256) without padding


def encode_path(path: str) -> str:
    """``path`` percent-encoded except for RFC 3986 unreserved characters and ``/``.

    What goes inside the challenge's quoted ``resource_metadata`` cannot then end the quoted
    string (``"``), escape it (``\\``) or split the header (``,`` and spaces).
    """
    return quote(path, safe="/")


def _origin(request: web.Request) -> str:
    return f"{scheme(request)}://{request.host}"


def resource_metadata_url(request: web.Request) -> str:
    """The ``resource_metadata`` URL for the requested path (spec §14.2)."""
    return f"{_origin(request)}{RESOURCE_METADATA}{encode_path(request.path)}"


def is_browser(request: web.Request) -> bool:
    """Whether a request comes from a browser navigating, which keeps the login 302 (spec §14.2).

    A top-level navigation says ``Sec-Fetch-Mode: navigate`` (every current browser), and
    browsers ask for ``text/html`` first; API and MCP clients send neither (the MCP SDKs accept
    ``application/json, text/event-stream``; curl sends ``*/*``).
    """
    if request.headers.get("Sec-Fetch-Mode", "").lower() == "navigate":
        return True
    accept = request.headers.get("Accept", "")
    return any(part.split(";", 1)[0].strip().lower() == "text/html" for part in accept.split(","))


def enabled(app: App | None) -> bool:
    return app is not None and app.oauth_configuration is not None and app.oauth_configuration.enabled


def challenge(request: web.Request, edge: Edge, app: App, *, invalid_token: bool) -> web.Response:
    """The 401 a non-browser client gets instead of the login 302 (spec §1.7, §14.2)."""
    response = access_denied(request, edge, app, 401)
    value = f'Bearer realm="OAuth", resource_metadata="{resource_metadata_url(request)}"'
    if invalid_token:
        # RFC 6750 §3.1: an expired or revoked token; the client refreshes or starts again
        value += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = value
    return response


def refusal(request: web.Request, edge: Edge, app: App, response: web.Response) -> web.Response:
    """An Access refusal as a managed-OAuth app gives it: the login 302 becomes the challenge
    for everything but a browser navigating, and for anything that sent an ``oauth:`` token."""
    if not enabled(app) or response.status != 302:
        return response
    if not response.headers.get("Location", "").startswith(f"{edge.team_domain}/cdn-cgi/access/login/"):
        return response  # a custom deny URL, not a login
    bearer = oauth_bearer(request) is not None
    if not bearer and is_browser(request):
        return response
    return challenge(request, edge, app, invalid_token=bearer)


def _oauth_app(edge: Edge, host: str, path: str) -> App | None:
    match = edge.index.match(host, path)
    if match is not None and enabled(match.app):
        return match.app
    return next((a for a in edge.index.apps_for_host(host) if enabled(a)), None)


async def handle(request: web.Request, edge: Edge, host: str, path: str) -> web.StreamResponse | None:
    """The managed-OAuth paths on an app host; None when no app there has managed OAuth on."""
    if path == SERVER_METADATA:
        app = _oauth_app(edge, host, "/")
        return None if app is None else _server_metadata(request, app)
    for prefix in (RESOURCE_METADATA, RFC9728_METADATA):
        if path == prefix or path.startswith(prefix + "/"):
            resource_path = path[len(prefix) :] or "/"
            app = _oauth_app(edge, host, resource_path)
            return None if app is None else _resource_metadata(request, app, resource_path)
    if _oauth_app(edge, host, "/") is None:
        return None
    match path:
        case "/cdn-cgi/access/oauth/registration":
            return await handle_register(request, edge, host)
        case "/cdn-cgi/access/oauth/authorization":
            return await handle_authorize(request, edge, host)
        case "/cdn-cgi/access/oauth/token":
            return await handle_token(request, edge, host)
    return None


def _judge(request: web.Request, app: App, who: Identity, client_id: str, step: str) -> Verdict:
    """The app's policies on ``who`` for an OAuth ``step`` (authorize, refresh), logged."""
    verdict = decide(app, Facts(ipaddress.ip_address(client_ip(request)), who.country), who)
    policy = verdict.policy.name if verdict.policy else None
    log.info(
        "oauth %s %s app=%r client=%s policy=%r decision=%s",
        step,
        who.email,
        app.name,
        client_id,
        policy,
        verdict.outcome,
    )
    return verdict


def _oauth_error(request: web.Request, error: str, description: str, status: int = 400) -> web.Response:
    extra = {"WWW-Authenticate": 'Basic realm="OAuth"'} if error == "invalid_client" else {}
    return json_answer(request, {"error": error, "error_description": description}, status, extra)


def _resource_metadata(request: web.Request, app: App, resource_path: str) -> web.Response:
    """RFC 9728 §3.2 protected-resource metadata for ``resource_path`` on this domain."""
    origin = _origin(request)
    body = {
        "resource": origin + encode_path(resource_path),
        "authorization_servers": [origin],
        "bearer_methods_supported": ["header"],
        "resource_name": app.name,
    }
    # public documents: browser-based clients (the MCP inspector) read them cross-origin
    return json_answer(request, body, headers={"Access-Control-Allow-Origin": "*"})


def _server_metadata(request: web.Request, app: App) -> web.Response:
    """RFC 8414 §2 authorization-server metadata; the issuer is the app domain asked (spec §14.2)."""
    origin = _origin(request)
    conf = app.oauth_configuration
    assert conf is not None
    body: dict[str, Any] = {
        "issuer": origin,
        "authorization_endpoint": origin + AUTHORIZE,
        "token_endpoint": origin + TOKEN,
    }
    if conf.dynamic_client_registration.enabled:
        body["registration_endpoint"] = origin + REGISTER
    body |= {
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(oauth.AUTH_METHODS),
        "authorization_response_iss_parameter_supported": True,
    }
    return json_answer(request, body, headers={"Access-Control-Allow-Origin": "*"})


async def handle_register(request: web.Request, edge: Edge, host: str) -> web.Response:
    """RFC 7591 dynamic client registration, under the app's allow-lists (spec §14.2)."""
    app = _oauth_app(edge, host, "/")
    assert app is not None and app.oauth_configuration is not None
    dcr = app.oauth_configuration.dynamic_client_registration
    if request.method != "POST":
        return _oauth_error(request, "invalid_request", "registration takes a POST with a JSON body", 405)
    if not dcr.enabled:
        return _oauth_error(
            request,
            "invalid_client_metadata",
            f"dynamic client registration is disabled for the application {app.name!r}",
            403,
        )
    raw = await read_bounded(request, BODY_LIMIT)
    if raw is None:
        return _oauth_error(request, "invalid_client_metadata", f"the body is larger than {BODY_LIMIT} bytes", 413)
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):
        return _oauth_error(request, "invalid_client_metadata", "the body is not JSON")
    if not isinstance(meta, dict):
        return _oauth_error(request, "invalid_client_metadata", "the body is not a JSON object")
    uris = meta.get("redirect_uris")
    if (
        not isinstance(uris, list)
        or not uris
        or len(uris) > REDIRECT_URI_LIMIT
        or not all(isinstance(u, str) for u in uris)
    ):
        return _oauth_error(
            request, "invalid_redirect_uri", f"redirect_uris must be a list of 1 to {REDIRECT_URI_LIMIT} strings"
        )
    for uri in uris:
        reason = oauth.redirect_uri_refusal(uri, dcr)
        if reason is not None:
            log.info("oauth register app=%r refused redirect_uri=%r: %s", app.name, uri, reason)
            return _oauth_error(request, "invalid_redirect_uri", f"redirect_uri {uri!r} {reason}")
    grant_types = meta.get("grant_types", ["authorization_code"])
    if not isinstance(grant_types, list) or not set(grant_types) <= {"authorization_code", "refresh_token"}:
        return _oauth_error(
            request, "invalid_client_metadata", "grant_types may only hold authorization_code and refresh_token"
        )
    response_types = meta.get("response_types", ["code"])
    if response_types != ["code"]:
        return _oauth_error(request, "invalid_client_metadata", 'response_types must be ["code"]')
    # RFC 7591 §2: an omitted method means client_secret_basic
    method = meta.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in oauth.AUTH_METHODS:
        return _oauth_error(
            request,
            "invalid_client_metadata",
            f"token_endpoint_auth_method must be one of {', '.join(oauth.AUTH_METHODS)}",
        )
    client, secret = edge.oauth.register(app.aud, tuple(uris), method, edge.clock.now())
    body: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": client.issued_at,
        "redirect_uris": list(client.redirect_uris),
        "grant_types": grant_types,
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
    }
    if isinstance(meta.get("client_name"), str):
        body["client_name"] = meta["client_name"]
    if secret is not None:
        body |= {"client_secret": secret, "client_secret_expires_at": 0}
    log.info("oauth register app=%r client=%s redirect_uris=%s", app.name, client.client_id, client.redirect_uris)
    return json_answer(request, body, 201)


def _resource_ok(edge: Edge, app: App, resource: str | None) -> bool:
    """RFC 8707: ``resource`` must be an absolute http(s) URL of one of the app's domains."""
    if resource is None:
        return True
    parts = urlsplit(resource)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment or parts.username:
        return False
    return app in edge.index.apps_for_host(parts.hostname.lower())


def _invalid_request_page(request: web.Request, app: App, message: str) -> web.Response:
    # RFC 6749 §4.1.2.1: with no trustworthy redirect URI the error is shown, never redirected
    return html_answer(
        request, pages.notice("Invalid authorization request", message, request[ray_key]), 400, app_headers(app)
    )


async def handle_authorize(request: web.Request, edge: Edge, host: str) -> web.Response:
    """The authorization endpoint: the person signs in through Access, then a code goes to the client."""
    q = request.query
    client = edge.oauth.clients.get(q.get("client_id", ""))
    app = edge.app_by_aud(client.aud) if client is not None else None
    fallback = _oauth_app(edge, host, "/")
    assert fallback is not None
    if client is None or app is None or not enabled(app) or app not in edge.index.apps_for_host(host):
        return _invalid_request_page(request, fallback, "Unknown client_id for this application.")
    redirect_uri = q.get("redirect_uri")
    if redirect_uri is None and len(client.redirect_uris) == 1:
        redirect_uri = client.redirect_uris[0]
    if redirect_uri is None or redirect_uri not in client.redirect_uris:
        return _invalid_request_page(request, app, "The redirect_uri is not registered for this client.")

    def to_client(**params: str) -> web.Response:
        if "state" in q:
            params["state"] = q["state"]
        params["iss"] = _origin(request)  # RFC 9207
        sep = "&" if "?" in redirect_uri else "?"
        return redirect(request, f"{redirect_uri}{sep}{urlencode(params)}")

    if q.get("response_type") != "code":
        return to_client(error="unsupported_response_type", error_description="response_type must be code")
    challenge_ = q.get("code_challenge", "")
    if q.get("code_challenge_method") != "S256" or not _CHALLENGE.fullmatch(challenge_):
        return to_client(error="invalid_request", error_description="PKCE with code_challenge_method S256 is required")
    resource = q.get("resource")
    if not _resource_ok(edge, app, resource):
        return to_client(error="invalid_target", error_description="resource is not a URL of this application")

    # the browser's app session from the ordinary sign-in; an OAuth token cannot stand in for it
    cred = None if "Authorization" in request.headers else presented_credential(request, edge, app)
    if cred is None or cred.session is None:
        # spec §1.2: the same 302 as any protected URL; the login ends back on this very URL
        return login_redirect(request, edge, app, service_token_status=False)
    who = cred.session.identity
    verdict = _judge(request, app, who, client.client_id, "authorize")
    if verdict.outcome != "allow":
        return block(request, edge, app, identity=verdict.outcome == "deny")
    now = edge.clock.now()
    code = edge.oauth.add_code(
        Code(
            client_id=client.client_id,
            aud=app.aud,
            redirect_uri=redirect_uri,
            challenge=challenge_,
            resource=resource,
            login_nonce=cred.session.nonce,
            identity=who,
            expires=now + CODE_TTL,
        ),
        now,
    )
    return to_client(code=code)


def _client_credentials(request: web.Request, form: dict[str, str]) -> tuple[str, str | None] | str:
    """(client_id, secret) from HTTP Basic or the form (RFC 6749 §2.3.1), or what is wrong."""
    client_id, secret = form.get("client_id"), form.get("client_secret")
    auth = request.headers.get("Authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return "the Basic credentials are not base64"
        basic_id, colon, basic_secret = decoded.partition(":")
        if not colon or (client_id is not None and client_id != unquote(basic_id)) or secret is not None:
            return "client credentials were sent twice"
        client_id, secret = unquote(basic_id), unquote(basic_secret)
    if not client_id:
        return "client_id is required"
    return client_id, secret


async def handle_token(request: web.Request, edge: Edge, host: str) -> web.Response:
    """The token endpoint: codes (with the PKCE verifier) and refresh tokens for opaque tokens."""
    if request.method != "POST":
        return _oauth_error(request, "invalid_request", "the token endpoint takes a POST", 405)
    raw = await read_bounded(request, BODY_LIMIT)
    if raw is None:
        return _oauth_error(request, "invalid_request", f"the body is larger than {BODY_LIMIT} bytes", 413)
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return _oauth_error(request, "invalid_request", "the body is not form-encoded UTF-8")
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            return _oauth_error(request, "invalid_request", f"{name} is given twice")  # RFC 6749 §3.2
        form[name] = value
    creds = _client_credentials(request, form)
    if isinstance(creds, str):
        return _oauth_error(request, "invalid_client", creds, 401)
    client_id, secret = creds
    client = edge.oauth.clients.get(client_id)
    app = edge.app_by_aud(client.aud) if client is not None else None
    if client is None or app is None or not enabled(app) or app not in edge.index.apps_for_host(host):
        return _oauth_error(request, "invalid_client", "unknown client_id", 401)
    if not edge.oauth.secret_ok(client, secret):
        return _oauth_error(request, "invalid_client", "the client secret is wrong or missing", 401)
    conf = app.oauth_configuration
    assert conf is not None
    now = edge.clock.now()
    resource = form.get("resource")
    if not _resource_ok(edge, app, resource):
        return _oauth_error(request, "invalid_target", "resource is not a URL of this application")

    match form.get("grant_type"):
        case "authorization_code":
            for name in ("code", "redirect_uri", "code_verifier"):
                if not form.get(name):
                    return _oauth_error(request, "invalid_request", f"{name} is required")
            code, replayed = edge.oauth.take_code(form["code"], now)
            if code is None:
                if replayed:
                    edge.revoke_grant(edge.oauth.grant_of_spent_code(form["code"]))
                why = (
                    "the authorization code was already used"
                    if replayed
                    else "the authorization code is invalid or expired"
                )
                return _oauth_error(request, "invalid_grant", why)
            if code.client_id != client.client_id:
                return _oauth_error(request, "invalid_grant", "the authorization code was issued to another client")
            if code.redirect_uri != form["redirect_uri"]:
                return _oauth_error(request, "invalid_grant", "redirect_uri does not match the authorization request")
            if not oauth.pkce_matches(form["code_verifier"], code.challenge):
                return _oauth_error(request, "invalid_grant", "code_verifier does not match the code_challenge")
            if resource is not None and code.resource is not None and resource != code.resource:
                return _oauth_error(request, "invalid_target", "resource differs from the authorization request")
            login = edge.sessions.get(code.login_nonce, now)
            if login is None or not login.alive(now):
                return _oauth_error(request, "invalid_grant", "the sign-in behind this code has ended")
            expires = now + (conf.session_duration or app.session_duration)
            session = edge.oauth_session(code.identity, expires)
            grant = Grant(
                id=secrets.token_urlsafe(16),
                client_id=client.client_id,
                aud=app.aud,
                identity=code.identity,
                session_nonce=session.nonce,
                login_nonce=code.login_nonce,
                expires=expires,
            )
            edge.oauth.add_grant(grant, now)
            edge.oauth.spend(form["code"], grant.id, now)
        case "refresh_token":
            if not form.get("refresh_token"):
                return _oauth_error(request, "invalid_request", "refresh_token is required")
            found = edge.oauth.grant_for_refresh(form["refresh_token"], now)
            if found is None or found.client_id != client.client_id:
                return _oauth_error(request, "invalid_grant", "the refresh token is invalid, expired or revoked")
            grant = found
            grant_session = edge.sessions.get(grant.session_nonce, now)
            if grant_session is None or not grant_session.alive(now):
                edge.revoke_grant(grant.id)
                return _oauth_error(request, "invalid_grant", "the session behind this grant has ended")
            # spec §14.2: "policies are re-evaluated on each token refresh"
            who = grant.identity
            verdict = _judge(request, app, who, client.client_id, "refresh")
            if verdict.outcome != "allow":
                edge.revoke_grant(grant.id)
                return _oauth_error(request, "invalid_grant", "the application's policies no longer allow this user")
        case None:
            return _oauth_error(request, "invalid_request", "grant_type is required")
        case other:
            return _oauth_error(request, "unsupported_grant_type", f"grant_type {other!r} is not supported")
    lifetime = min(conf.access_token_lifetime, max(1, int(grant.expires - now)))
    access, refresh = edge.oauth.issue(grant, now, lifetime)
    return json_answer(
        request,
        {"access_token": access, "token_type": "Bearer", "expires_in": lifetime, "refresh_token": refresh},
    )
