"""The browser sign-in: the team-domain SSO page, the app callback and logout (spec §1.3-§1.9)."""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import math
import re
import secrets
from collections.abc import Callable
from urllib.parse import quote

from aiohttp import web

from . import claims, journal, pages, tokens
from . import headers as h
from .config import App, Config, MfaConfig, Policy
from .edge import Approval, ChainHop, Edge, Session
from .errors import one_line
from .policy import Facts, Identity, decide, split_host
from .web_access import app_cookies, block, login_url, set_app_session
from .web_request import clear_cookie, client_ip, cookie, html_answer, ray_key, redirect, set_cookie

log = logging.getLogger("fakeedge")

# no control character (C0, DEL, C1): the address goes on log lines, and to a terminal an escape
# sequence there is a command (allow_any_email takes any address by default)
_EMAIL_PART = r"[^@\s<>\"'\x00-\x1f\x7f-\x9f]+"
_EMAIL = re.compile(rf"{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}")
# RFC 5321 §4.5.3.1.3: a path is 256 octets with its <>. Checked first: the pattern is quadratic
# on "a@" and a run of dots (60,000 of them, in a 64 KiB form, took a minute)
EMAIL_LIMIT = 254
OTP_ATTEMPTS = 5
FORM_LIMIT = 64 * 1024
LOGIN_PREFIX = "/cdn-cgi/access/login/"
META_LIMIT = 4096  # a real meta is about 1 KiB; a longer one is not ours, and is not worth an RSA check
# The sign-in form posts back to the login URL, meta included, after the user has typed (and
# perhaps waited for a one-time PIN): the meta's signature and binding still count for this long
# after its five minutes (spec §1.2); opening the login, and silent SSO, need an unexpired meta.
META_FORM_GRACE = 3600


def safe_redirect_path(value: str | None) -> str:
    """A ``redirect_url`` reduced to a path on the app's own host, or ``/``.

    The result starts with exactly one ``/``, holds no backslash or control character (browsers
    drop tabs and newlines and read ``\\`` as ``/``) and is percent-encoded, so it cannot name
    another host however it is spelled; the callback also prefixes it with the app's own origin.
    """
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/"
    if any(c == "\\" or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        return "/"
    return quote(value, safe="/?&=%:@!$'()*+,;~-._[]")


def _login_target(request: web.Request, edge: Edge) -> tuple[App, str, str] | None:
    """The (app, app host[:port], redirect path) a login URL names, or None if it names no app."""
    parsed = split_host(request.path.removeprefix(LOGIN_PREFIX))
    if parsed is None:
        return None  # not a host name: it would end up in the callback URL's authority
    name, port = parsed
    if port and int(port) not in edge.ports:
        return None  # only this edge's own ports: no bouncing to another local service
    app = edge.app_by_aud(request.query.get("kid", ""))
    if app is None:
        return None
    path = safe_redirect_path(request.query.get("redirect_url"))
    match = edge.index.match(name, path.split("?", 1)[0])
    if (match is None or match.app is not app) and app not in edge.index.apps_for_host(name):
        return None
    return app, f"{name}:{port}" if port else name, path


async def handle_login(request: web.Request, edge: Edge) -> web.StreamResponse:
    """GET/HEAD/POST ``/cdn-cgi/access/login/<host>`` on the team domain."""
    target = _login_target(request, edge)
    if target is None:
        return html_answer(request, pages.unknown_app(request[ray_key]), 404)
    app, host, path = target
    secure = request.secure
    opening = request.method in ("GET", "HEAD")  # HEAD: cloudflared's org-token exchange (spec §9.2)
    binding = _meta_binding(request, edge, app, host, grace=0 if opening else META_FORM_GRACE)
    if binding is None:
        # no meta, or one this edge did not sign for this app and host: a login started anywhere
        # but in this browser's 302 would hand its callback to whoever opens it (login CSRF)
        return html_answer(
            request,
            pages.notice(
                "Invalid login link",
                "This sign-in link was not issued to your browser by the application, or it has expired. "
                "Please go to the URL of your application again.",
                request[ray_key],
            ),
            400,
        )

    if opening:
        session = _org_session(request, edge)
        hop_id = request.query.get("chain")
        hop = edge.chain_hop(hop_id, take=True) if hop_id else None
        if hop is not None and hop.app is app and hop.host == host:
            if session is not hop.session:
                # not the browser of the sign-in that started the chain: the chain stops here,
                # and this host asks for a sign-in when it is visited
                return redirect(request, hop.final)
            return _complete(request, edge, session, app, host, path, binding, final=hop.final, chain=hop.rest)
        if session is not None:
            return _complete(request, edge, session, app, host, path, binding)  # silent SSO (spec §1.3)
        return _login_page(request, edge, app)

    if request.content_length is None or request.content_length > FORM_LIMIT:
        # a sign-in form is a few hundred bytes; never buffer an unbounded body for it
        return html_answer(
            request, pages.notice("Request too large", "The sign-in form is too large.", request[ray_key]), 413
        )
    form = await request.post()
    csrf = cookie(request, h.CF_SESSION)
    if not csrf or not tokens.secrets_equal(str(form.get("csrf", "")), csrf):
        return _login_page(request, edge, app, error="Your sign-in form expired. Please try again.", status=400)

    if "mfa" in form:
        return _mfa_passed(request, edge, app, host, path, binding, str(form["mfa"]))
    if "approval_reason" in form:
        return _approval_requested(request, edge, app, host, path, binding, str(form["approval_reason"]))
    if "justification" in form:
        return _justified(request, edge, app, host, path, binding, csrf, str(form["justification"]))
    if "otp_id" in form:
        otp_id = str(form["otp_id"])
        pin = edge.otp(otp_id)
        outcome = edge.check_otp(otp_id, str(form.get("code", "")).strip(), OTP_ATTEMPTS)
        if pin is None or outcome == "expired":
            return _login_page(request, edge, app, error="That code has expired. Please start again.", status=400)
        if outcome == "spent":
            return _login_page(request, edge, app, error="Too many wrong codes. Please start again.", status=400)
        if outcome == "wrong":
            return html_answer(
                request,
                pages.one_time_pin(
                    app.name,
                    pin.email,
                    csrf=csrf,
                    otp_id=otp_id,
                    error="That code is not valid.",
                    brand=edge.config.branding,
                ),
                400,
            )
        identity = Identity.for_email(
            pin.email, edge.config.user(pin.email), default_country=edge.config.default_country, idp="onetimepin"
        )
    else:
        email = str(form.get("email", "")).strip()
        user = edge.config.user(email)
        if len(email) > EMAIL_LIMIT or not _EMAIL.fullmatch(email):
            return _login_page(request, edge, app, error="Enter an email address such as you@example.com.", status=400)
        if user is None and not edge.config.allow_any_email:
            return _login_page(request, edge, app, error=f"{email} is not one of the configured users.", status=403)
        if edge.config.one_time_pin:
            return _send_code(request, edge, app, email, csrf)
        identity = Identity.for_email(email, user, default_country=edge.config.default_country)

    session = edge.login(identity)
    response = _complete(request, edge, session, app, host, path, binding)
    set_cookie(response, h.CF_AUTHORIZATION, edge.org_token(session), expires=session.exp, secure=secure)
    return response


def _send_code(request: web.Request, edge: Edge, app: App, email: str, csrf: str) -> web.Response:
    """The code step: a new one-time PIN, printed in the log, unless the address or client had enough."""
    wait, which = edge.otp_wait(email, client_ip(request))
    if wait > 0:
        minutes = math.ceil(wait / 60)
        count = edge.otps_per_email.count if which == "email" else edge.otps_per_client.count
        where = f"sent to {email}" if which == "email" else "asked for from your address"
        window = edge.otps_per_email.window // 60
        message = (
            f"Too many sign-in codes were {where}: at most {count} in {window:g} minutes. "
            f"Please try again in {minutes} minute{'s' if minutes != 1 else ''}."
        )
        log.warning("fakeedge: one-time PIN refused: %s", message)
        return html_answer(
            request,
            pages.notice("Too many codes", message, request[ray_key]),
            429,
            {"Retry-After": str(math.ceil(wait))},
        )
    otp_id, pin = edge.add_otp(email, client_ip(request))
    log.warning("fakeedge: one-time PIN for %s is %s", email, pin.code)
    return html_answer(
        request, pages.one_time_pin(app.name, email, csrf=csrf, otp_id=otp_id, brand=edge.config.branding)
    )


def _login_page(request: web.Request, edge: Edge, app: App, *, error: str = "", status: int = 200) -> web.Response:
    return _form_page(
        request,
        edge,
        app,
        lambda csrf: pages.login(
            app.name,
            edge.config.users,
            csrf=csrf,
            allow_any_email=edge.config.allow_any_email,
            one_time_pin=edge.config.one_time_pin,
            error=error,
            brand=edge.config.branding,
        ),
        status,
    )


CF_SESSION_TTL = 4 * 3600  # spec §1.5: the team domain's CSRF cookie lives 4 h


def _form_page(
    request: web.Request, edge: Edge, app: App, render: Callable[[str], str], status: int = 200
) -> web.Response:
    """A team-domain page with a form: its CSRF value is the browser's ``CF_Session`` (made if absent)."""
    csrf = cookie(request, h.CF_SESSION) or secrets.token_urlsafe(24)
    response = html_answer(request, render(csrf), status, {h.ACCESS_DOMAIN: app.domain})
    set_cookie(response, h.CF_SESSION, csrf, expires=edge.clock.now() + CF_SESSION_TTL, secure=request.secure)
    return response


# spec §14.5: an IdP whose amr already holds one of these is a second factor: no MFA step
STRONG_AMR = frozenset({"hwk", "swk", "otp", "face", "fpt", "iris", "retina", "vbm"})
MFA_DEFAULT_DURATION = 24 * 3600


def mfa_required(config: Config, app: App, policy: Policy | None, who: Identity) -> MfaConfig | None:
    """The MFA settings that apply, or None: the policy's over the app's over the organisation's."""
    for level in (policy.mfa_config if policy else None, app.mfa_config):
        if level is not None:
            found: MfaConfig | None = None if level.mfa_disabled else level
            break
    else:
        found = config.mfa_config if config.mfa_required_for_all_apps else None
    if found is None or STRONG_AMR.intersection(who.amr):
        return None
    return found


def mfa_duration(config: Config, app: App, policy: Policy | None) -> int:
    for level in (policy.mfa_config if policy else None, app.mfa_config, config.mfa_config):
        if level is not None and level.session_duration is not None:
            return level.session_duration
    return MFA_DEFAULT_DURATION


def _mfa_page(request: web.Request, edge: Edge, app: App, email: str, mfa: MfaConfig) -> web.Response:
    journal.note(request, f"{app.name!r} needs MFA (mfa_config): the fake authenticator page, before the app")
    return _form_page(
        request,
        edge,
        app,
        lambda csrf: pages.mfa(app.name, email, mfa.allowed_authenticators, csrf=csrf, brand=edge.config.branding),
    )


def _mfa_passed(
    request: web.Request, edge: Edge, app: App, host: str, path: str, binding: str, kind: str
) -> web.Response:
    """The fake authenticator's answer: an allowed factor passes MFA for this session (spec §14.5)."""
    session = _org_session(request, edge)
    if session is None:
        return _login_page(request, edge, app, error="Please sign in first.", status=400)
    verdict = decide(app, Facts(ipaddress.ip_address(client_ip(request)), session.identity.country), session.identity)
    mfa = mfa_required(edge.config, app, verdict.policy, session.identity)
    if mfa is not None and kind not in mfa.allowed_authenticators:
        return _mfa_page(request, edge, app, session.identity.email, mfa)
    session.mfa_at = edge.clock.now()
    log.info("mfa %s app=%r factor=%s", session.identity.email, app.name, one_line(kind))
    return _complete(request, edge, session, app, host, path, binding)


def _approval_page(
    request: web.Request, edge: Edge, app: App, host: str, path: str, pending: Approval | None
) -> web.Response:
    """Temporary authentication (spec §14.5): the request form, the wait, or the refusal."""
    if pending is None or (pending.state == "approved"):  # none yet, or the last grant ran out
        state, status = "ask", 200
    else:
        state, status = pending.state, 200 if pending.state == "pending" else 403
    journal.note(
        request,
        {
            "ask": "temporary authentication (approval_required): the page that asks for access",
            "pending": f"temporary authentication: request {pending.id if pending else ''} awaits an approver",
            "denied": f"temporary authentication: request {pending.id if pending else ''} was denied",
        }[state],
    )
    app_url = f"{_app_scheme(edge, host, request.secure)}://{host}{path}"
    return _form_page(
        request,
        edge,
        app,
        lambda csrf: pages.approval(
            app.name,
            csrf=csrf,
            state=state,
            request_id=pending.id if pending else "",
            app_url=app_url,
            brand=edge.config.branding,
        ),
        status,
    )


def _approval_requested(
    request: web.Request, edge: Edge, app: App, host: str, path: str, binding: str, reason: str
) -> web.Response:
    session = _org_session(request, edge)
    if session is None:
        return _login_page(request, edge, app, error="Please sign in first.", status=400)
    reason = reason.strip()
    if not reason or len(reason) > pages.JUSTIFICATION_LIMIT:
        return _approval_page(request, edge, app, host, path, None)
    pending = edge.request_approval(session, app, reason)
    log.warning(
        "fakeedge: %s asks for temporary access to %r (request %s): %s",
        session.identity.email,
        app.name,
        pending.id,
        one_line(reason),
    )
    return _complete(request, edge, session, app, host, path, binding)


def _justification_page(
    request: web.Request, edge: Edge, app: App, prompt: str | None, *, error: str = "", status: int = 200
) -> web.Response:
    """Ask why (spec §14.5); the CSRF value is the browser's ``CF_Session``, as on the sign-in form."""
    journal.note(request, "purpose_justification_required: the page that asks why, before the app")
    return _form_page(
        request,
        edge,
        app,
        lambda csrf: pages.justification(app.name, prompt, csrf=csrf, error=error, brand=edge.config.branding),
        status,
    )


def _justified(
    request: web.Request, edge: Edge, app: App, host: str, path: str, binding: str, csrf: str, reason: str
) -> web.Response:
    """The justification form's answer: remembered for this sign-in and app, then the callback."""
    session = _org_session(request, edge)
    if session is None:
        return _login_page(request, edge, app, error="Please sign in first.", status=400)
    reason = reason.strip()
    if not reason or len(reason) > pages.JUSTIFICATION_LIMIT:
        policy = next((p for p in app.policies if p.purpose_justification_required), None)
        prompt = policy.purpose_justification_prompt if policy else None
        error = f"Enter a justification of at most {pages.JUSTIFICATION_LIMIT} characters."
        return _justification_page(request, edge, app, prompt, error=error, status=400)
    session.justify(app.aud, reason)
    log.info("justification %s app=%r: %s", session.identity.email, app.name, one_line(reason))
    return _complete(request, edge, session, app, host, path, binding)


def _org_session(request: web.Request, edge: Edge) -> Session | None:
    token = cookie(request, h.CF_AUTHORIZATION)
    if not token:
        return None
    cred = edge.credential(token)
    if cred is None or cred.kind != "org":
        return None
    return cred.session


def _complete(
    request: web.Request,
    edge: Edge,
    session: Session,
    app: App,
    host: str,
    path: str,
    binding: str,
    *,
    final: str | None = None,
    chain: tuple[str, ...] | None = None,
) -> web.Response:
    """After sign-in: the block page, or a 302 to the app's callback with a one-time nonce.

    The nonce is bound to ``binding``, the ``app_session_hash`` of the verified ``meta``: only the
    browser holding that ``CF_AppSession`` on the app host can use it (spec §1.2, §1.4).
    """
    who = session.identity
    facts = Facts(ipaddress.ip_address(client_ip(request)), who.country)
    verdict = decide(app, facts, who)
    log.info(
        "login %s app=%r policy=%s decision=%s",
        who.email,
        app.name,
        repr(verdict.policy.name) if verdict.policy else "-",  # "-" as in the access log
        verdict.outcome,
    )
    if verdict.outcome not in ("allow", "bypass", "service"):
        return block(request, edge, app, identity=True, email=who.email)
    policy = verdict.policy
    mfa = mfa_required(edge.config, app, policy, who)
    if mfa is not None and (
        session.mfa_at is None or edge.clock.now() >= session.mfa_at + mfa_duration(edge.config, app, policy)
    ):
        return _mfa_page(request, edge, app, who.email, mfa)
    if verdict.outcome == "allow" and policy is not None and policy.approval_required:
        pending = edge.approval(session, app)
        if pending is None or pending.state != "approved" or edge.clock.now() >= pending.until:
            return _approval_page(request, edge, app, host, path, pending)
    if (
        verdict.outcome == "allow"
        and policy is not None
        and policy.purpose_justification_required
        and app.aud not in session.justified
    ):
        return _justification_page(request, edge, app, policy.purpose_justification_prompt)
    nonce = edge.add_login(
        {
            "session": session,
            "app": app,
            "host": host,
            "redirect_path": path,
            "policy": verdict.policy,
            "app_session_hash": binding,
            "final": final,
            "chain": chain,
        }
    )
    state = (
        base64.urlsafe_b64encode(json.dumps({"hostname": host, "authDomain": edge.team_host}).encode())
        .decode()
        .rstrip("=")
    )
    location = (
        f"{_app_scheme(edge, host, request.secure)}://{host}/cdn-cgi/access/authorized?nonce={nonce}&state={state}"
    )
    return redirect(request, location)


def _app_scheme(edge: Edge, host: str, team_secure: bool) -> str:
    """The scheme of the app host the login started on: its port names the listener.

    Without a port the app was reached on a default port: take the team request's scheme (the
    real edge calls back over https, and a TLS team domain means a TLS edge).
    """
    port = host.rpartition(":")[2] if not host.endswith("]") else ""
    if port.isascii() and port.isdigit() and int(port) in edge.ports:
        return "https" if int(port) in edge.tls_ports else "http"
    return "https" if team_secure else "http"


def _meta_binding(request: web.Request, edge: Edge, app: App, host: str, *, grace: float) -> str | None:
    """The ``app_session_hash`` of the login URL's ``meta``, if this edge signed it for this login.

    It must verify against the edge's keys, be of type ``meta``, name the ``kid`` app as its
    ``aud`` and the login path's host as its ``hostname``, and not have expired more than
    ``grace`` seconds ago (spec §1.2); else None.
    """
    meta = request.query.get("meta", "")
    if not meta or len(meta) > META_LIMIT:
        return None
    verified = tokens.verify(meta, edge.keys, edge.clock.now(), leeway=grace)
    if verified is None:
        return None
    payload = verified[1]
    hostname = payload.get("hostname")
    value = payload.get("app_session_hash")
    if (
        payload.get("type") != "meta"
        or payload.get("aud") != app.aud
        or not isinstance(hostname, str)
        or split_host(hostname) != split_host(host)
        or not isinstance(value, str)
        or not _HASH.fullmatch(value)
    ):
        return None
    return value


_HASH = re.compile(r"[0-9a-f]{64}")


EAGER_LIMIT = 5  # spec §1.4: Cloudflare chained at most five domains; longer chains break


def eager_hosts(app: App, current: str) -> tuple[str, ...]:
    """The app's other concrete hosts (same port as ``current``), for the eager cookie chain."""
    name, _, port = current.rpartition(":") if not current.endswith("]") and ":" in current else (current, "", "")
    hosts = list(dict.fromkeys(d.host for d in app.destinations if "*" not in d.host))
    # the app's setting (spec §14.6): on chains every concrete domain, off none; without one,
    # the old rule: a chain of at most five
    wanted = app.eager_redirect_cookie if app.eager_redirect_cookie is not None else len(hosts) <= EAGER_LIMIT
    if len(hosts) < 2 or not wanted:
        return ()  # wildcard hosts cannot be visited: only the concrete ones are chained
    return tuple(f"{h}:{port}" if port else h for h in hosts if h != name)


def _invalid_login(request: web.Request) -> web.Response:
    return html_answer(
        request,
        pages.notice(
            "Invalid login session", "Please try going to the URL of your application again.", request[ray_key]
        ),
        400,
    )


async def handle_authorized(request: web.Request, edge: Edge) -> web.Response:
    """``/cdn-cgi/access/authorized`` on the app host: one-time nonce -> app cookie -> 302 (spec §1.4).

    With ``?chain=`` instead of a nonce, the start of the next host of an eager cookie chain.
    """
    if "nonce" not in request.query and "chain" in request.query:
        return _start_chain_hop(request, edge, edge.chain_hop(request.query["chain"], take=False))
    pending = edge.take_login(request.query.get("nonce", ""))
    if pending is None or pending.host != request.host.lower():
        return _invalid_login(request)
    app_session = cookie(request, h.CF_APP_SESSION) or ""
    if not tokens.secrets_equal(claims.app_session_hash(app_session), pending.app_session_hash):
        return _invalid_login(request)  # another browser than the one sent to the login (login CSRF)
    if not pending.session.alive(edge.clock.now()):
        return html_answer(
            request,
            pages.notice("Invalid login session", "Your session ended. Please sign in again.", request[ray_key]),
            400,
        )
    jwt, exp = edge.app_jwt(pending.session, pending.app, pending.policy)
    scheme = "https" if request.secure else "http"
    # an absolute URL on the app's own origin: the path was checked, the origin is not the client's to choose
    location = pending.final or f"{scheme}://{pending.host}{pending.redirect_path}"
    chain = pending.chain if pending.chain is not None else eager_hosts(pending.app, pending.host)
    if chain:
        # spec §1.4 "eager redirect": set the cookie on each concrete domain of the app in one go;
        # each host is an ordinary bound sign-in of its own (ChainHop), never a bare nonce in a URL
        hop_id = edge.add_chain_hop(
            {"session": pending.session, "app": pending.app, "host": chain[0], "rest": chain[1:], "final": location}
        )
        location = f"{scheme}://{chain[0]}/cdn-cgi/access/authorized?chain={hop_id}"
    response = redirect(request, location)
    for name, value in app_cookies(request, pending.app, jwt, exp):
        response.headers.add(name, value)
    clear_cookie(response, h.CF_APP_SESSION, secure=request.secure)
    return response


def _start_chain_hop(request: web.Request, edge: Edge, hop: ChainHop | None) -> web.Response:
    """The browser reached the next host of a chain: this host's ``CF_AppSession``, then the login."""
    if hop is None or hop.host != request.host.lower():
        return _invalid_login(request)
    location, app_session = login_url(request, edge, hop.app, "/")
    response = redirect(request, f"{location}&chain={request.query['chain']}")
    set_app_session(response, request, edge, app_session)
    return response


async def handle_logout(request: web.Request, edge: Edge, *, team: bool) -> web.Response:
    """``/cdn-cgi/access/logout`` on either host: revoke the session everywhere (spec §1.9)."""
    for token in (cookie(request, h.CF_AUTHORIZATION), request.headers.get(h.ACCESS_TOKEN)):
        cred = edge.credential(token) if token else None
        if cred is not None and cred.session is not None:
            edge.revoke(cred.session)
    back = request.query.get("redirect_url")
    if back is not None:
        # fakeedge's addition, for the block page's "Sign in as someone else": back to a path on
        # this same host (never another), now without a session, so the sign-in page shows
        response = redirect(request, safe_redirect_path(back))
    else:
        response = html_answer(
            request, pages.notice("Logged out", "You have been logged out of Cloudflare Access.", request[ray_key])
        )
    clear_cookie(response, h.CF_AUTHORIZATION, secure=request.secure)
    if not team:
        clear_cookie(response, h.CF_BINDING, secure=request.secure)
    return response
