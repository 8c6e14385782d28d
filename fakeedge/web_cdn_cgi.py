"""``/cdn-cgi/access/certs`` and ``get-identity``, on the team domain and on every app host (spec §3, §4)."""

from __future__ import annotations

from aiohttp import web

from . import headers as h
from .edge import Edge
from .headers import edge_headers
from .web_request import client_ip, cookie, json_answer, ray_key


async def handle_certs(request: web.Request, edge: Edge) -> web.Response:
    """The JWKS document: 200, never a redirect, compact JSON in Cloudflare's order (spec §3)."""
    if edge.certs_fault is not None:
        fault = await edge.certs_fault.apply(edge.clock.now())
        if fault is not None:
            status, content_type, body = fault
            return web.Response(
                status=status, body=body, content_type=content_type, headers=edge_headers(request[ray_key])
            )
    edge.refresh_keys()  # keys rotated by another process sharing keys_dir (fakeedge keys rotate)
    return web.Response(
        body=edge.keys.certs_document(edge.clock.now()),
        content_type="application/json",
        headers=edge_headers(request[ray_key]),
    )


async def handle_get_identity(request: web.Request, edge: Edge, *, app_host: str | None = None) -> web.Response:
    """The composite identity of the session behind the presented token, or 401 (spec §4.1).

    On the team domain any of the edge's tokens will do; on an app host (``app_host``) only a
    token for an app on that host: another app's token, or the org session, is no session here.
    """
    auds = None if app_host is None else {app.aud for app in edge.index.apps_for_host(app_host)}
    for token in (
        cookie(request, h.CF_AUTHORIZATION),
        request.headers.get(h.JWT_ASSERTION),
        request.headers.get(h.ACCESS_TOKEN),
    ):
        cred = edge.credential(token) if token else None
        if cred is not None and (auds is None or (cred.kind != "org" and not auds.isdisjoint(cred.auds))):
            return json_answer(request, edge.identity_document(cred, client_ip(request)))
    return json_answer(request, {"err": "no valid Access session"}, 401)
