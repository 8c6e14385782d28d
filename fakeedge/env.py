"""What an origin needs to know about the edge in front of it, as dotenv lines."""

from __future__ import annotations


def shown_host(host: str) -> str:
    """The address clients use for a listener's host: a wildcard address becomes loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def base_url(scheme: str, host: str, port: int) -> str:
    """The URL clients use for a listener: ``0.0.0.0`` shown as ``127.0.0.1``, default ports left out."""
    shown = shown_host(host)
    shown = f"[{shown}]" if ":" in shown else shown
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{shown}" if port == default else f"{scheme}://{shown}:{port}"
