"""The control API: the toolkit's powers over HTTP, for tests written in any language.

Served under ``/cdn-cgi/fakeedge/`` on the team domain only. Without ``admin_token`` in the
config it answers loopback clients only; with one, it answers whoever sends
``Authorization: Bearer <admin_token>``, and no one else (loopback included). Every POST must be
``Content-Type: application/json``, even with no body: a web page in a browser cannot send that
cross-site without a CORS preflight, which the edge never approves.

    POST   token          {"email"|"service_token", "app", "variant", "claims", "header", "lifetime"}
    GET    keys           POST keys/rotate {"grace": "7d"}
    GET    clock          POST clock {"advance"|"skew": seconds or "1h"} | {"freeze": true|<epoch>}
                                      | {"unfreeze": true} | {"reset": true}
    GET    requests[?since=<seq>]   POST requests {"record": true|false}     DELETE requests
    GET    sessions       POST sessions/revoke {"id"|"email": ...}
    POST   explain        {"url"|"ray", "email"|"service_token"|"all": true, "ip"}
    GET    personas       POST personas {"email", "name", "groups", "country", ...} (as in users:)
    GET    certs/fault    POST certs/fault {"mode": "slow"|"empty"|"failing"|null, "delay", "times", "duration"}
    POST   audit          {"origin", "app", "path", "email", "accept_status", "timeout", "stall", "rotation_wait"}
                          -> the audit report as JSON (docs/audit.md); it rotates keys and breaks certs briefly
    GET    oauth          POST oauth/revoke {"grant": id} | {"email": address}    (managed OAuth, spec §14.2)
    POST   login          {"email"|"service_token", "app", "format": "storage-state"|"netscape"|"cookie"}
                          -> a session's cookies ({"storage_state"|"netscape"|"cookie", "session", "expires"})

The inspector page is ``GET /cdn-cgi/fakeedge/`` and its live feed ``GET /cdn-cgi/fakeedge/events``
(:mod:`fakeedge.web_inspector`), under the same rule. Browsers' ``Sec-Fetch-Site`` must say
``same-origin`` or ``none`` when they send it: no other site's page gets an answer.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import inspect
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .audit import DEFAULT_ROTATION_WAIT, DEFAULT_TIMEOUT, parse_accept_status, run_audit
from .config import USER_KEYS, parse_config, parse_duration
from .edge import Edge, Session
from .errors import FakeEdgeError
from .explain import Judgement, judge, judge_all
from .faults import certs_fault
from .login_cookies import FORMATS, cookie_line, login_cookies, netscape_jar, storage_state
from .mint import VARIANTS, check_variant, mint
from .tokens import secrets_equal
from .web_inspector import PAGES, PRIVATE
from .web_request import client_ip, json_answer, read_bounded

CONTROL_PREFIX = "/cdn-cgi/fakeedge/"
# a control call is a few hundred bytes, claims or personas a few KiB; over aiohttp's own default
# (1 MiB, off for the edge: tests/test_aiohttp_contract.py), so that its answer is told apart
BODY_LIMIT = 4 << 20
TOKEN_KEYS = ("app", "email", "service_token", "variant", "claims", "header", "lifetime")
CLOCK_ACTIONS = ("advance", "skew", "freeze", "unfreeze", "reset")
FAULT_KEYS = ("mode", "delay", "times", "duration")
AUDIT_KEYS = ("origin", "app", "path", "email", "accept_status", "timeout", "stall", "rotation_wait")


class _Refused(Exception):
    def __init__(self, status: int, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def control_allowed(remote: str | None, authorization: str | None, admin_token: str | None) -> bool:
    """Whether a client may use the control API. Pure.

    Args:
        remote: the connecting address (the socket's, never a header).
        authorization: the request's ``Authorization`` header, if any.
        admin_token: the config's ``admin_token``, if any.

    Returns:
        With an admin token configured: True only for ``Bearer <admin_token>``, from any address.
        Without one: True only for a loopback address (127.0.0.0/8, ::1, ::ffff:127.x.y.z).
    """
    if admin_token is not None:
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "basic":
            # a browser on the inspector page: any user name, the admin token as the password
            try:
                value = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return False
            return secrets_equal(value, admin_token)
        return scheme.lower() == "bearer" and secrets_equal(value.strip(), admin_token)
    if not remote:
        return False
    try:
        ip = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False  # a unix socket or something else without an address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _json(request: web.Request, data: Any, status: int = 200, **headers: str) -> web.Response:
    return json_answer(request, data, status, {**PRIVATE, **headers})


async def handle_control(request: web.Request, edge: Edge) -> web.StreamResponse:
    """``/cdn-cgi/fakeedge/*`` on the team domain."""
    try:
        if not control_allowed(client_ip(request), request.headers.get("Authorization"), edge.config.admin_token):
            if edge.config.admin_token is not None:
                is_page = request.path.removeprefix(CONTROL_PREFIX).strip("/") in PAGES
                raise _Refused(
                    401,
                    "the fakeedge control API needs Authorization: Bearer <admin_token>",
                    # the page: a browser asks for the token as a password
                    **{"WWW-Authenticate": 'Basic realm="fakeedge"' if is_page else 'Bearer realm="fakeedge"'},
                )
            raise _Refused(
                403,
                "the fakeedge control API answers loopback clients only; set admin_token in the config "
                "and send Authorization: Bearer <admin_token> to use it from elsewhere",
            )
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            # a page of another site (or of an app behind this edge) in the developer's browser
            raise _Refused(403, "the fakeedge control API answers its own page only, not another site's")
        name = request.path.removeprefix(CONTROL_PREFIX).strip("/")
        page = PAGES.get(name)
        if page is not None and request.method == "GET":
            return await page(request, edge)
        routes = _ROUTES.get(name)
        if routes is None:
            raise _Refused(404, f"no control endpoint {request.path!r}; endpoints: {', '.join(_ROUTES)}")
        handler = routes.get(request.method)
        if handler is None:
            raise _Refused(
                405, f"{request.path} takes {', '.join(routes)}, not {request.method}", Allow=", ".join(routes)
            )
        body = await _body(request)
        result = handler(edge, body)
        if inspect.isawaitable(result):
            result = await result
        return _json(request, result)
    except _Refused as exc:
        return _json(request, {"error": str(exc)}, exc.status, **exc.headers)
    except (FakeEdgeError, ValueError, TypeError, ArithmeticError) as exc:
        return _json(request, {"error": str(exc)}, 400)


async def _body(request: web.Request) -> dict[str, Any]:
    if request.method == "GET":
        return dict(request.query)  # GET changes nothing: its parameters are its body
    if request.method != "POST":
        return {}  # a cross-site page cannot send DELETE without a preflight
    if request.content_type != "application/json":
        # even with no body: a no-cors fetch can POST without any Content-Type
        raise _Refused(
            415,
            "send Content-Type: application/json (it keeps web pages in a browser from calling the control API)",
        )
    raw = await read_bounded(request, BODY_LIMIT)
    if raw is None:
        raise _Refused(413, f"the body is larger than {BODY_LIMIT} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise _Refused(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise _Refused(400, "expected a JSON object")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(allowed)}")


# --- endpoints -----------------------------------------------------------------------------------


def post_token(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    """A token, as ``fakeedge token`` prints it; a variant may also be a flag (``{"expired": true}``)."""
    flags = [k for k in body if k.replace("-", "_") in VARIANTS and k != "valid"]
    _only({k: v for k, v in body.items() if k not in flags}, TOKEN_KEYS)
    for k in flags:
        if not isinstance(body[k], bool):
            raise ValueError(f"{k}: expected true or false, got {body[k]!r}")
    chosen = [k.replace("-", "_") for k in flags if body[k] is True]
    if "variant" in body:
        chosen.append(body["variant"])
    if len(chosen) > 1:
        raise ValueError(f"give one variant at most, got {', '.join(map(str, chosen))}")
    for key in ("claims", "header"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise ValueError(f"{key}: expected a JSON object")
    variant = check_variant(str(chosen[0])) if chosen else "valid"
    token = mint(
        edge,
        app=_required_text(body, "app"),
        email=_text(body, "email"),
        service_token=_text(body, "service_token"),
        variant=variant,
        claims=body.get("claims"),
        header=body.get("header"),
        lifetime=body.get("lifetime"),
    )
    return {"token": token, "variant": variant}


def _text(body: dict[str, Any], key: str) -> str | None:
    return None if body.get(key) is None else _required_text(body, key)


def _required_text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key}: expected a non-empty string")
    return value


def get_keys(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    now = edge.clock.now()
    keys = edge.keys
    in_grace = keys.previous is not None and now < keys.previous_until
    return {
        "current": keys.current.kid,
        "previous": keys.previous.kid if in_grace and keys.previous is not None else None,
        "previous_until": keys.previous_until if in_grace else None,
    }


def post_rotate(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    _only(body, ("grace",))
    edge.rotate_keys(parse_duration(body.get("grace", "7d")))
    return get_keys(edge, body)


def get_clock(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    return {"now": edge.clock.now(), "frozen": edge.clock.frozen}


def post_clock(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    _only(body, CLOCK_ACTIONS)
    if len(body) != 1:
        raise ValueError(f"give one action: {', '.join(CLOCK_ACTIONS)}")
    ((action, value),) = body.items()
    clock = edge.clock
    match action:
        case "advance":
            clock.advance(parse_duration(value))
        case "skew":
            clock.skew(parse_duration(value))
        case "freeze":
            if value is True:
                clock.freeze()
            elif isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_EPOCH:
                clock.freeze(float(value))
            else:
                raise ValueError("freeze: expected true (now) or seconds since the epoch")
        case "unfreeze":
            clock.unfreeze()
        case "reset":
            clock.reset()
    return get_clock(edge, body)


def get_requests(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    """The journal: every request kept, or those numbered above ``since`` (masked, see Record.to_json)."""
    _only(body, ("since",))
    since = body.get("since", "0")
    if not isinstance(since, str | int) or not str(since).isdigit():
        raise ValueError(f"since: expected the seq of the last request seen (0 or more), got {since!r}")
    recorder = edge.recorder
    records = recorder.since(int(since)) if recorder is not None else []
    return {"recording": recorder is not None, "requests": [r.to_json() for r in records]}


def post_requests(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    _only(body, ("record",))
    if not isinstance(body.get("record"), bool):
        raise ValueError('record: expected true or false, as in {"record": true}')
    if body["record"]:
        edge.start_recording()
    else:
        edge.stop_recording()
    return get_requests(edge, {})


def delete_requests(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    if edge.recorder is not None:
        edge.recorder.clear()
    return get_requests(edge, {})


def session_id(session: Session) -> str:
    """A session's name in the control API: a digest of its nonce, which is not shown."""
    return hashlib.sha256(f"fakeedge:session:{session.nonce}".encode()).hexdigest()[:16]


def get_sessions(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    """The sign-in sessions still alive, newest first."""
    now = edge.clock.now()
    alive = [s for s in edge.sessions.values(now) if s.alive(now)]
    return {
        "sessions": [
            {
                "id": session_id(s),
                "email": s.identity.email,
                "idp": s.identity.idp,
                "iat": s.iat,
                "exp": s.exp,
                "revoked_at": s.revoked_at,
                "apps": sorted(a.name for aud in s.app_tokens if (a := edge.app_by_aud(aud)) is not None),
            }
            for s in reversed(alive)
        ]
    }


def post_revoke(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    """Log sessions out everywhere (after ``logout_delay``): one by id, or every one of an email."""
    _only(body, ("id", "email"))
    if len(body) != 1:
        raise ValueError('give one of id or email, as in {"email": "alice@acme.test"}')
    ((key, value),) = body.items()
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string")
    now = edge.clock.now()
    chosen = [
        s
        for s in edge.sessions.values(now)
        if s.alive(now) and (session_id(s) == value if key == "id" else s.identity.email.lower() == value.lower())
    ]
    if not chosen:
        raise ValueError(f"no live session with {key} {value!r}")
    for s in chosen:
        edge.revoke(s)
    return {"revoked": [session_id(s) for s in chosen], **get_sessions(edge, {})}


def get_personas(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    """The personas of the sign-in page, as the config has them."""
    return {
        "personas": [
            {
                "email": u.email,
                "name": u.name,
                "groups": list(u.groups),
                "github_orgs": list(u.github_orgs),
                "country": u.country,
                "idp": u.idp,
            }
            for u in edge.config.users
        ]
    }


def post_persona(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    """Add a persona (or replace the one with that email), with the keys of the config's ``users``.

    Sessions already signed in keep the identity they signed in with (spec §6.3: identity is
    decided at login); the persona's attributes apply from its next sign-in.
    """
    _only(body, USER_KEYS)
    (user,) = parse_config({"team": edge.config.team, "users": [body]}, source="personas").users
    config = edge.config
    others = tuple(u for u in config.users if u.email.lower() != user.email.lower())
    edge.reconfigure(dataclasses.replace(config, users=(*others, user)))
    return get_personas(edge, {})


def post_explain(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    """The explain engine: a URL (or a journal request, by Ray ID) judged for a caller, or for all."""
    _only(body, ("url", "ray", "email", "service_token", "all", "ip"))
    if ("url" in body) == ("ray" in body):
        raise ValueError("give url or ray (a request in the journal)")
    ip = body.get("ip")
    if "ray" in body:
        record = edge.recorder.find(str(body["ray"])) if edge.recorder is not None else None
        if record is None:
            raise ValueError(f"no request with ray {body['ray']!r} in the journal")
        url = f"http://{record.host}{record.path}"
        ip = ip or record.client
    else:
        url = _required_text(body, "url")
    ip = str(ip or "127.0.0.1")
    if body.get("all") is True:
        if "email" in body or "service_token" in body:
            raise ValueError("all: judges every persona and service token; give no email or service_token")
        return {"url": url, "judgements": [_judgement(j) for j in judge_all(edge.config, url, ip=ip)]}
    if "email" in body and "service_token" in body:
        raise ValueError("give email or service_token, not both")
    judgement = judge(edge.config, url, email=_text(body, "email"), service_token=_text(body, "service_token"), ip=ip)
    return {"url": url, **_judgement(judgement)}


def _judgement(j: Judgement) -> dict[str, Any]:
    return {
        "caller": j.caller,
        "app": j.app,
        "policy": j.policy,
        "decision": j.outcome,
        "admitted": j.admitted,
        "answer": j.answer,
        "reason": j.reason,
        "lines": list(j.lines),
    }


def get_fault(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    fault = edge.certs_fault
    if fault is None or not fault.active(edge.clock.now()):
        return {"mode": None}
    return {
        "mode": fault.mode,
        "delay": fault.delay,
        "times": fault.times,
        "served": fault.served,
        "until": fault.until,
    }


def post_fault(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    _only(body, FAULT_KEYS)
    if "mode" not in body:
        raise ValueError('mode: required: "slow", "empty", "failing", or null to end the fault')
    fault = None
    if body["mode"] is not None:  # built first: a refused request leaves the running fault alone
        fault = certs_fault(
            str(body["mode"]),
            now=edge.clock.now(),
            delay=body.get("delay", 5.0),
            times=body.get("times"),
            duration=body.get("duration"),
        )
    edge.set_certs_fault(fault)
    return get_fault(edge, body)


async def post_audit(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    """``fakeedge audit`` run by this edge against ``origin``; the report as JSON."""
    _only(body, AUDIT_KEYS)
    accept = body.get("accept_status")
    if isinstance(accept, str):
        accept = parse_accept_status(accept)
    elif accept is not None:
        if not isinstance(accept, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in accept):
            raise ValueError('accept_status: expected a list of statuses such as [200, 204], or "200-299"')
        accept = parse_accept_status(",".join(map(str, accept))) if accept else None
    seconds = {k: parse_duration(body[k]) for k in ("timeout", "stall", "rotation_wait") if body.get(k) is not None}
    report = await run_audit(
        edge,
        _required_text(body, "origin"),
        app=_required_text(body, "app"),
        path=_text(body, "path"),
        email=_text(body, "email"),
        accept=accept,
        timeout=seconds.get("timeout", DEFAULT_TIMEOUT),
        stall=seconds.get("stall"),
        rotation_wait=seconds.get("rotation_wait", DEFAULT_ROTATION_WAIT),
    )
    return report.to_json()


def get_oauth(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    return edge.oauth_document()


def post_oauth_revoke(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    _only(body, ("grant", "email"))
    if len(body) != 1 or not isinstance(next(iter(body.values()), None), str):
        raise ValueError('expected one of {"grant": "<grant id>"} or {"email": "<address>"}')
    ended = edge.revoke_oauth(grant=body.get("grant"), email=body.get("email"))
    return {"revoked": [g.id for g in ended], **edge.oauth_document()}


def post_login(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    """A sign-in without a browser: a real session of this edge (revocable by logout, sessions/revoke
    and reset) or a service token's app JWT, as cookies in the format asked for (default storage-state)."""
    _only(body, ("email", "service_token", "app", "format"))
    fmt = body.get("format", "storage-state")
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if ("email" in body) == ("service_token" in body):
        raise ValueError('give email or service_token, as in {"email": "alice@acme.test", "app": "Admin"}')
    login = login_cookies(
        edge, _required_text(body, "app"), email=_text(body, "email"), service_token=_text(body, "service_token")
    )
    session = edge.sessions.get(login.session_nonce, edge.clock.now()) if login.session_nonce else None
    answer: dict[str, Any] = {"session": session_id(session) if session else None, "expires": login.expires}
    if fmt == "storage-state":
        answer["storage_state"] = storage_state(login)
    elif fmt == "netscape":
        answer["netscape"] = netscape_jar(login)
    else:
        answer["cookie"] = cookie_line(login)
    return answer


def get_approvals(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    """Temporary-authentication requests (spec §14.5), pending ones first."""
    found = sorted(edge.approvals.values(), key=lambda a: (a.state != "pending", a.requested_at))
    return {"approvals": [a.to_json() for a in found]}


def post_approvals(edge: Edge, body: dict[str, Any]) -> dict[str, Any]:
    """``{"id": ..., "approve": true|false, "duration": "1h"}``: an approver's answer (at most 24 h)."""
    _only(body, ("id", "approve", "duration"))
    if not isinstance(body.get("id"), str) or not isinstance(body.get("approve"), bool):
        raise ValueError('expected {"id": "<request id>", "approve": true or false, "duration": "1h"}')
    duration = parse_duration(body.get("duration", "24h"))
    return edge.decide_approval(body["id"], approve=body["approve"], duration=duration).to_json()


MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z: beyond it, dates do not format

_Handler = Callable[[Edge, dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]
_ROUTES: dict[str, dict[str, _Handler]] = {
    "token": {"POST": post_token},
    "keys": {"GET": get_keys},
    "keys/rotate": {"POST": post_rotate},
    "clock": {"GET": get_clock, "POST": post_clock},
    "requests": {"GET": get_requests, "POST": post_requests, "DELETE": delete_requests},
    "sessions": {"GET": get_sessions},
    "sessions/revoke": {"POST": post_revoke},
    "explain": {"POST": post_explain},
    "personas": {"GET": get_personas, "POST": post_persona},
    "certs/fault": {"GET": get_fault, "POST": post_fault},
    "audit": {"POST": post_audit},
    "oauth": {"GET": get_oauth},
    "oauth/revoke": {"POST": post_oauth_revoke},
    "login": {"POST": post_login},
    "approvals": {"GET": get_approvals, "POST": post_approvals},
}
