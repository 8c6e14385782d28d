"""What an origin needs to know about the edge in front of it, as dotenv lines.

Verifiers differ in what they are given (spec §10): cc-auth wants the team domain as a bare host,
allowedflare and Cloudflare's samples a URL, every one of them the app's AUD, and all of them must
trust the TLS certificate the team domain presents.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from .config import Config
from .errors import ConfigError
from .tls import ca_env

_UNQUOTED = re.compile(r"[A-Za-z0-9_./:@%+,=-]*")


def shown_host(host: str) -> str:
    """The address clients use for a listener's host: a wildcard address becomes loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def base_url(scheme: str, host: str, port: int) -> str:
    """The URL clients use for a listener: ``0.0.0.0`` shown as ``127.0.0.1``, default ports left out."""
    shown = shown_host(host)
    shown = f"[{shown}]" if ":" in shown else shown
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{shown}" if port == default else f"{scheme}://{shown}:{port}"


def listener_url(http: tuple[str, int] | None, tls: tuple[str, int] | None) -> str:
    """The team domain of an edge whose config names none: its TLS listener's URL if it has one,
    else its plain listener's (``web_app.start`` with the ports bound, :func:`team_domain` and
    ``fakeedge token`` with the configured ones)."""
    if tls is not None:
        return base_url("https", *tls)
    assert http is not None, "an edge listens somewhere"
    return base_url("http", *http)


def team_domain(config: Config) -> str:
    """The team domain URL an edge started from ``config`` uses (as ``web_app.start`` decides it).

    Raises:
        ConfigError: no ``team_domain`` is set and the listener it would default to has port 0.
    """
    if config.team_domain:
        return config.team_domain
    listen = config.tls_listen or config.listen
    assert listen is not None  # parse_config requires one listener
    if listen[1] == 0:
        raise ConfigError(
            config.source,
            "team_domain",
            "is not set and the listener has port 0, so the team domain is only known once serving; "
            "set team_domain or a fixed port",
        )
    return listener_url(config.listen, config.tls_listen)


def aud_variable(app_name: str) -> str:
    """``Admin API`` -> ``FAKEEDGE_AUD_ADMIN_API``."""
    return "FAKEEDGE_AUD_" + re.sub(r"[^A-Z0-9]+", "_", app_name.upper()).strip("_")


def origin_env(config: Config, ca_file: Path | str | None) -> dict[str, str]:
    """The variables an origin behind this edge needs, in the order they are printed.

    Args:
        config: the edge's configuration.
        ca_file: the CA certificate's path as the origin sees it (inside a container, the mount);
            None for no CA variables (a plain-HTTP edge).

    Raises:
        ConfigError: the team domain is unknown (see :func:`team_domain`), or two app names make
            the same variable name.
    """
    url = team_domain(config)
    out = {
        "FAKEEDGE_TEAM_DOMAIN": url,
        "FAKEEDGE_TEAM_HOST": urlsplit(url).netloc,
        "FAKEEDGE_CERTS_URL": f"{url}/cdn-cgi/access/certs",
    }
    owners: dict[str, str] = {}
    for i, app in enumerate(config.apps):
        name = aud_variable(app.name)
        if name in owners:
            raise ConfigError(
                config.source,
                f"apps[{i}].name",
                f"{app.name!r} and {owners[name]!r} would both be {name}; rename one",
            )
        owners[name] = app.name
        out[name] = app.aud
    return (out | ca_env(ca_file)) if ca_file is not None else out


def format_dotenv(variables: dict[str, str], *, export: bool = False) -> str:
    """``KEY=value`` lines (single-quoted where needed), ``export KEY=value`` for a shell's eval."""
    prefix = "export " if export else ""
    lines = []
    for key, value in variables.items():
        shown = value if _UNQUOTED.fullmatch(value) else "'" + value.replace("'", "'\\''") + "'"
        lines.append(f"{prefix}{key}={shown}")
    return "\n".join(lines) + "\n"
