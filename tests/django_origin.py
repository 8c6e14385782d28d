"""A Django origin as its team would write it, for tests/test_toolkit_origins.py: a middleware that
verifies ``Cf-Access-Jwt-Assertion`` with PyJWKClient (settings name the certs URL, the AUD and the
issuer) and hands the claims to the views, which never read the email header.

Django's settings are the process's: :func:`django_origin` configures them once and points them at
the edge it is given (one edge at a time, as the tests' fixture runs them).
"""

from __future__ import annotations

from typing import Any

import django  # type: ignore[import-untyped]  # Django ships no type hints (django-stubs would be one more dependency)
import jwt
from django.conf import settings  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse, JsonResponse  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]

# PyJWT refetches certs for an unknown kid only 30 s after the last fetch; a test cannot wait
JWKS_OPTIONS: dict[str, Any] = {"cooldown_duration": 0}


class CloudflareAccessMiddleware:
    """401 without an assertion or with one that does not verify; else ``request.access_claims``."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.jwks: dict[str, jwt.PyJWKClient] = {}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = request.headers.get("Cf-Access-Jwt-Assertion")
        if not token:
            return JsonResponse({"error": "missing Cf-Access-Jwt-Assertion"}, status=401)
        url = settings.CF_ACCESS_CERTS_URL
        jwks = self.jwks.get(url) or self.jwks.setdefault(url, jwt.PyJWKClient(url, **JWKS_OPTIONS))
        try:
            key = jwks.get_signing_key_from_jwt(token)
            request.access_claims = jwt.decode(
                token, key.key, algorithms=["RS256"], audience=settings.CF_ACCESS_AUD, issuer=settings.CF_ACCESS_ISSUER
            )
        except jwt.PyJWTError as exc:
            return JsonResponse({"error": type(exc).__name__, "why": str(exc)}, status=401)
        response: HttpResponse = self.get_response(request)
        return response


def me(request: HttpRequest) -> JsonResponse:
    claims = request.access_claims
    return JsonResponse({"email": claims.get("email"), "common_name": claims.get("common_name"), "via": "django"})


urlpatterns = [path("me", me)]


def _configure() -> None:
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test only",
            ALLOWED_HOSTS=["app.acme.test", "127.0.0.1"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[f"{__name__}.CloudflareAccessMiddleware"],
            INSTALLED_APPS=[],
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()


def _point_at(edge: Any) -> None:
    _configure()
    settings.CF_ACCESS_CERTS_URL = edge.certs_url
    settings.CF_ACCESS_AUD = edge.aud("App")
    settings.CF_ACCESS_ISSUER = edge.team_domain


def django_wsgi_origin(edge: Any) -> Any:
    """The project's ``wsgi.py``: ``get_wsgi_application()``."""
    _point_at(edge)
    from django.core.wsgi import get_wsgi_application  # type: ignore[import-untyped]

    return get_wsgi_application()


def django_asgi_origin(edge: Any) -> Any:
    """The project's ``asgi.py``: ``get_asgi_application()`` (the middleware runs in its thread pool)."""
    _point_at(edge)
    from django.core.asgi import get_asgi_application  # type: ignore[import-untyped]

    return get_asgi_application()
