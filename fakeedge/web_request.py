"""What every handler reads off a request and writes on a response: keys, addresses, cookies."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

import aiohttp
from aiohttp import web

from .config import App
from .edge import Edge
from .headers import edge_headers

edge_key = web.AppKey("edge_key", Edge)
client_key = web.AppKey("client_key", aiohttp.ClientSession)
ray_key = web.RequestKey("ray_key", str)  # the Ray ID of this request, on every edge answer

NO_STORE = {
    "Cache-Control": "private, max-age=0, no-store, no-cache, must-revalidate, post-check=0, pre-check=0",
    "Expires": "Thu, 01 Jan 1970 00:00:01 GMT",
}


def client_ip(request: web.Request) -> str:
    """The connecting address: only the socket is trusted, never a header."""
    # no peer address (not a TCP socket): an address that matches nothing, loopback least of all
    return request.remote or "0.0.0.0"


# -- the edge's own answers (pages, JSON, redirects): the edge's headers, never stored --


def html_answer(
    request: web.Request, page: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """One of the edge's HTML pages (sign-in, block, notice...), with ``headers`` added."""
    return _own(request, status, page, "text/html", headers)


def json_answer(
    request: web.Request, data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON answer of the edge's (get-identity, OAuth endpoints, the control API), with ``headers`` added."""
    return _own(request, status, json.dumps(data), "application/json", headers)


def _own(
    request: web.Request, status: int, text: str, content_type: str, headers: Mapping[str, str] | None
) -> web.Response:
    return web.Response(
        status=status,
        text=text,
        content_type=content_type,
        headers={**edge_headers(request[ray_key]), **NO_STORE, **(headers or {})},
    )


def redirect(
    request: web.Request, location: str, status: int = 302, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A redirect of the edge's to ``location``, with ``headers`` added."""
    return web.Response(
        status=status, headers={**edge_headers(request[ray_key]), **NO_STORE, **(headers or {}), "Location": location}
    )


def scheme(request: web.Request) -> str:
    return "https" if request.secure else "http"


def cookie(request: web.Request, name: str) -> str | None:
    """One cookie's value, without parsing the whole header into a SimpleCookie."""
    raw = request.headers.get("Cookie")
    if not raw or name not in raw:
        return None
    prefix = name + "="
    for part in raw.split(";"):
        part = part.strip()
        if part.startswith(prefix):
            return part[len(prefix) :].strip('"')
    return None


def set_cookie(response: web.StreamResponse, name: str, value: str, **attributes: Any) -> None:
    response.headers.add("Set-Cookie", cookie_header(name, value, **attributes))


def cookie_header(
    name: str,
    value: str,
    *,
    expires: float | None,
    secure: bool,
    same_site: str | None = "none",
    http_only: bool = True,
    path: str = "/",
) -> str:
    """A Set-Cookie value in Cloudflare's attribute order (spec §1.5).

    Over plain HTTP browsers refuse ``SameSite=None`` without ``Secure``, so there ``Secure`` is
    left out and ``None`` becomes ``Lax``.
    """
    parts = [f"{name}={value}"]
    if expires is not None:
        parts.append("Expires=" + _cookie_date(expires))
    parts.append(f"Path={path}")
    if secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    if same_site is not None:
        if not secure and same_site.lower() == "none":
            same_site = "Lax"
        parts.append(f"SameSite={same_site}")
    return "; ".join(parts)


# A service token's cookie goes back on every request with the same expiry (spec §5), and
# formatdate() was 2.3 µs of the 3.4 µs it took to build (bench/README.md).
@functools.lru_cache(maxsize=256)
def _cookie_date(expires: float) -> str:
    return formatdate(expires, usegmt=True)


def clear_cookie(response: web.StreamResponse, name: str, *, secure: bool, path: str = "/") -> None:
    set_cookie(response, name, "", expires=0, secure=secure, same_site=None, path=path)


def app_cookie_header(name: str, value: str, app: App, *, expires: float, secure: bool, path: str) -> str:
    """An app-host cookie with the app's SameSite / HttpOnly / Path settings (spec §1.5, §7.3)."""
    return cookie_header(
        name,
        value,
        expires=expires,
        secure=secure,
        same_site=app.same_site_cookie_attribute or "none",
        http_only=app.http_only_cookie_attribute,
        path=path if app.path_cookie_attribute else "/",
    )


async def read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The request's body, or None past ``limit`` bytes: never buffered beyond it, declared or not."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 14):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
