"""The ``fakeedge`` command. Thin: it parses options, calls the library and turns errors into exit 1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from .errors import FakeEdgeError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_CONFIG = "fakeedge.yml"


def _errors(fn: F) -> F:
    """Print a user mistake as one line on stderr and exit 1; never a traceback."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FakeEdgeError as exc:
            click.echo(f"fakeedge: error: {exc}", err=True)
            sys.exit(1)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="The YAML config.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fakeedge")
def main() -> None:
    """fakeedge plays the Cloudflare edge with Cloudflare Access on your laptop and in CI."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"YAML config. Default: ./{DEFAULT_CONFIG} if present, else the built-in demo.",
)
@click.option(
    "--listen", help="HOST:PORT of the plain-HTTP listener; overrides the config's `listen`. Port 0: any free port."
)
@click.option(
    "--tls-listen",
    help="HOST:PORT of a TLS listener as well (leaves from the local CA in keys_dir); overrides `tls_listen`.",
)
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="One line per request on stderr.")
@_errors
def serve(config_path: Path | None, listen: str | None, tls_listen: str | None, access_log: bool) -> None:
    """Run the edge in front of your services (or the demo, with no config)."""
    from .config import load_config, parse_host_port

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    listen_addr = tls_addr = None
    for flag, value, default_port in (("--listen", listen, 8787), ("--tls-listen", tls_listen, 8443)):
        if value is None:
            continue
        try:
            parsed = parse_host_port(value, default_port=default_port)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=flag) from None
        if flag == "--listen":
            listen_addr = parsed
        else:
            tls_addr = parsed
    if config_path is None and Path(DEFAULT_CONFIG).is_file():
        config_path = Path(DEFAULT_CONFIG)
    config = load_config(config_path) if config_path is not None else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, listen_addr, access_log, tls_addr))


async def _serve(
    config: Any, listen: tuple[str, int] | None, access_log: bool, tls_listen: tuple[str, int] | None = None
) -> None:
    from .demo import DEMO_APP, demo_config, start_whoami
    from .edge import Edge
    from .web_app import AccessLog, start

    extra_runners = []
    demo = config is None
    edge_box: list[Edge] = []
    if demo:
        listen = listen or ("127.0.0.1", 8787)
        probe = demo_config("http://127.0.0.1:1", listen)
        whoami, origin_url = await start_whoami(lambda: edge_box[0].team_domain, probe.apps[0].aud)
        extra_runners.append(whoami)
        config = demo_config(origin_url, listen)
    host, port = listen or config.listen or (None, 0)
    tls_listen = tls_listen or config.tls_listen
    edge = Edge.create(config)
    edge_box.append(edge)
    try:
        runner, (_bound_host, bound_port) = await start(
            edge, host, port, access_log=AccessLog() if access_log else None, tls_listen=tls_listen
        )
    except OSError as exc:
        if tls_listen is None:
            raise FakeEdgeError(f"cannot listen on {host}:{port} ({exc.strerror}); try --listen 127.0.0.1:0") from None
        # asyncio's message names the address that could not be bound
        raise FakeEdgeError(f"cannot listen ({exc.strerror}); try --listen/--tls-listen 127.0.0.1:0") from None
    out = sys.stderr
    if demo:
        # the one thing a newcomer needs, before anything else scrolls by
        print(f"\n  Open http://localhost:{bound_port}/ in your browser and sign in as a persona.\n", file=out)
    if host is not None:
        print(f"fakeedge: listening on http://{host}:{bound_port} (team domain {edge.team_domain})", file=out)
    if tls_listen is not None:
        from .tls import ca_path

        print(
            f"fakeedge: listening on https://{tls_listen[0]}:{min(edge.tls_ports)} (team domain {edge.team_domain}); "
            f"clients trust {ca_path(config.keys_dir)}",
            file=out,
        )
    for app in config.apps:
        print(f"fakeedge: app {app.name!r} on {', '.join(map(str, app.destinations))} aud={app.aud}", file=out)
    if edge.recorder is not None:
        who = "with admin_token" if config.admin_token else "from this machine"
        print(f"fakeedge: inspector at {edge.team_domain}/cdn-cgi/fakeedge/ ({who})", file=out)
    for key in config.not_emulated:
        print(f"fakeedge: note: {key} is accepted but not emulated", file=out)
    if demo:
        print(
            f"\n  Service token: curl -H 'CF-Access-Client-Id: {config.service_tokens[0].client_id}' "
            f"-H 'CF-Access-Client-Secret: {config.service_tokens[0].client_secret}' http://localhost:{bound_port}/\n"
            f"  (demo app {DEMO_APP!r}; Ctrl-C stops)\n",
            file=out,
            flush=True,
        )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        for r in extra_runners:
            await r.cleanup()


def _variant_flags(fn: F) -> F:
    """One flag per token variant, named as ``FakeEdge.mint(variant=...)``: --expired, --wrong-aud, ..."""
    from .mint import VARIANTS

    for name, doc in reversed(VARIANTS.items()):
        if name != "valid":
            fn = click.option(f"--{name.replace('_', '-')}", name, is_flag=True, help=doc)(fn)
    return fn


def _claim(text: str) -> tuple[str, Any]:
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise click.BadParameter(f"expected NAME=VALUE, got {text!r}", param_hint="--claim")
    if not value:
        return name, None
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


@main.command()
@config_option
@click.option("--app", required=True, help="The app's name; its AUD is the token's aud.")
@click.option("--email", help="A user token for this address (spec §2.2).")
@click.option("--service-token", "service_token", help="A service-token token for this name, id or client id.")
@click.option(
    "--claim",
    "claims",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a claim last; VALUE is JSON if it parses, else text; NAME= removes the claim. Repeatable.",
)
@click.option("--lifetime", help="exp - iat, e.g. 10m. Default: the app's session_duration.")
@_variant_flags
@_errors
def token(
    config_path: Path,
    app: str,
    email: str | None,
    service_token: str | None,
    claims: tuple[str, ...],
    lifetime: str | None,
    **flags: bool,
) -> None:
    """Print a signed Access app token for your origin: valid, or broken in one named way.

    Signed with the keys in the config's keys_dir; iss is the config's team_domain, else the
    address `fakeedge serve` listens on.
    """
    from .config import load_config
    from .mint import mint, offline_edge

    chosen = [name for name, on in flags.items() if on]
    if len(chosen) > 1:
        raise click.UsageError(
            "give one variant flag at most, got " + " ".join(f"--{n.replace('_', '-')}" for n in chosen)
        )
    if (email is None) == (service_token is None):
        raise click.UsageError("give --email (a user token) or --service-token (a service-token token)")
    overrides = dict(_claim(text) for text in claims)
    edge = offline_edge(load_config(config_path))
    try:
        jwt = mint(
            edge,
            app=app,
            email=email,
            service_token=service_token,
            variant=chosen[0] if chosen else "valid",
            claims=overrides,
            lifetime=lifetime,
        )
    except ValueError as exc:
        raise FakeEdgeError(str(exc)) from None
    click.echo(jwt)


@main.group()
def keys() -> None:
    """Show or rotate the signing keys in the config's keys_dir (a running edge: the control API)."""


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@keys.command("show")
@config_option
@click.option("--certs", "as_certs", is_flag=True, help="Print the /cdn-cgi/access/certs document instead.")
@_errors
def keys_show(config_path: Path, as_certs: bool) -> None:
    """Show the current key, and the previous one while it is still in certs (spec §3)."""
    from .config import load_config
    from .keys import KeyStore

    config = load_config(config_path)
    now = time.time()
    store = KeyStore(config.keys_dir, now)
    if as_certs:
        click.echo(store.certs_document(now).decode())
        return
    click.echo(f"keys_dir {config.keys_dir}")
    click.echo(f"current  {store.current.kid}")
    if store.previous is not None and now < store.previous_until:
        click.echo(f"previous {store.previous.kid} (in certs until {_utc(store.previous_until)})")


@keys.command("rotate")
@config_option
@click.option("--grace", default="7d", show_default=True, help="How long the previous key stays in certs.")
@_errors
def keys_rotate(config_path: Path, grace: str) -> None:
    """Make a new current key; the previous one stays in certs for the grace period (spec §3)."""
    from .config import load_config, parse_duration
    from .keys import KeyStore

    try:
        seconds = parse_duration(grace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--grace") from None
    config = load_config(config_path)
    now = time.time()
    store = KeyStore(config.keys_dir, now)
    old = store.current.kid
    click.echo(f"current  {store.rotate(now, seconds).kid}")
    click.echo(f"previous {old} (in certs until {_utc(now + seconds)})")
    click.echo(
        "fakeedge: note: a running edge keeps the keys it loaded: restart it, "
        "or rotate through it with POST /cdn-cgi/fakeedge/keys/rotate",
        err=True,
    )


@main.command()
@config_option
@_errors
def check(config_path: Path) -> None:
    """Validate a config and summarise its apps, hosts and AUDs."""
    from .config import load_config

    config = load_config(config_path)
    click.echo(f"{config_path}: ok (team {config.team})")
    for app in config.apps:
        click.echo(
            f"  app {app.name!r}: {', '.join(map(str, app.destinations))}  aud={app.aud}  policies={len(app.policies)}"
        )
    for rule in config.ingress:
        click.echo(f"  ingress {rule.hostname or '*'}{' ' + rule.path.pattern if rule.path else ''} -> {rule.service}")
    if config.tls_listen is not None:
        from .env import team_domain
        from .tls import tls_hostnames

        try:
            team = urlsplit(team_domain(config)).hostname or ""
        except FakeEdgeError:
            team = "127.0.0.1"
        host, port = config.tls_listen
        click.echo(f"  tls {host}:{port}: certificates for {', '.join(tls_hostnames(config, team))}")
    for key in config.not_emulated:
        click.echo(f"  note: {key} is accepted but not emulated")


@main.command()
@config_option
@click.argument("url")
@click.option("--email", help="Explain for a user signed in with this address.")
@click.option("--service-token", "service_token", help="Explain for this service token (name, id or client id).")
@click.option("--ip", default="127.0.0.1", show_default=True, help="The client address.")
@click.option(
    "--all", "everyone", is_flag=True, help="Judge URL for no credentials, every persona and every service token."
)
@_errors
def explain(config_path: Path, url: str, email: str | None, service_token: str | None, ip: str, everyone: bool) -> None:
    """Show which ingress rule, app, policy and rule decide URL, and the outcome."""
    from .config import load_config
    from .explain import explain as run
    from .explain import judge_all, table

    if email and service_token:
        raise click.UsageError("give --email or --service-token, not both")
    if everyone and (email or service_token):
        raise click.UsageError("--all judges every persona and service token; give no --email or --service-token")
    config = load_config(config_path)
    try:
        lines = (
            table(judge_all(config, url, ip=ip))
            if everyone
            else run(config, url, email=email, service_token=service_token, ip=ip)
        )
    except ValueError as exc:
        raise FakeEdgeError(str(exc)) from None
    click.echo("\n".join(lines))


def _keys_dir(config_path: Path | None) -> Path:
    """The keys_dir that ``serve`` would use with the same ``--config``."""
    from .config import load_config
    from .demo import demo_config

    if config_path is None and Path(DEFAULT_CONFIG).is_file():
        config_path = Path(DEFAULT_CONFIG)
    if config_path is not None:
        return load_config(config_path).keys_dir
    return demo_config("http://127.0.0.1:1", ("127.0.0.1", 8787)).keys_dir


_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"YAML config whose keys_dir holds the CA. Default: ./{DEFAULT_CONFIG} if present, else the demo's.",
)


@main.group()
def ca() -> None:
    """The local CA that signs fakeedge's TLS certificates (created on first use in keys_dir)."""


@ca.command("path")
@_config_option
@_errors
def ca_path(config_path: Path | None) -> None:
    """Print the CA certificate's file: what origins, browsers and curl must trust."""
    from .tls import LocalCA

    click.echo(LocalCA.load(_keys_dir(config_path)).cert_path)


@ca.command("env")
@_config_option
@click.option("--export", is_flag=True, help="Prefix each line with `export `, for eval in a shell.")
@_errors
def ca_env(config_path: Path | None, export: bool) -> None:
    """Print SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS and CURL_CA_BUNDLE lines."""
    from .env import format_dotenv
    from .tls import LocalCA, ca_env

    cert = LocalCA.load(_keys_dir(config_path)).cert_path
    click.echo(format_dotenv(ca_env(cert), export=export), nl=False)


@main.command("env")
@config_option
@click.option(
    "--ca-file",
    help="The CA certificate's path as the origin sees it (e.g. a container mount). Default: `fakeedge ca path`.",
)
@click.option("--export", is_flag=True, help="Prefix each line with `export `, for eval in a shell.")
@_errors
def env(config_path: Path, ca_file: str | None, export: bool) -> None:
    """Print, as dotenv lines, what an origin behind this edge needs.

    The team domain as a URL and as a bare host, its certs URL, each app's AUD as
    FAKEEDGE_AUD_<APP NAME>, and the variables that make clients trust the local CA.
    """
    from .config import load_config
    from .env import format_dotenv, origin_env
    from .tls import LocalCA

    config = load_config(config_path)
    cert = ca_file if ca_file is not None else LocalCA.load(config.keys_dir).cert_path
    click.echo(format_dotenv(origin_env(config, cert), export=export), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
