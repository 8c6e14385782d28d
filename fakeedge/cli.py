"""The ``fakeedge`` command. Thin: it parses options, calls the library and turns errors into exit 1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click

from .errors import ConfigError, FakeEdgeError, one_line

if TYPE_CHECKING:
    from .config import Config

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_CONFIG = "fakeedge.yml"


def _errors(fn: F) -> F:
    """Print a user mistake on stderr, one line per error, and exit 1; never a traceback."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FakeEdgeError as exc:
            errors = exc.errors if isinstance(exc, ConfigError) else (exc,)
            for error in errors:
                click.echo(f"fakeedge: error: {one_line(str(error))}", err=True)
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


demo_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"The YAML config. Default: ./{DEFAULT_CONFIG} if present, else the built-in demo's (as `serve` does).",
)


def _load_or_demo(config_path: Path | None) -> Config:
    """The config ``serve`` would run with the same ``--config``: the file, ./fakeedge.yml, else the demo's."""
    from .config import load_config
    from .demo import offline_demo_config

    if config_path is None and Path(DEFAULT_CONFIG).is_file():
        config_path = Path(DEFAULT_CONFIG)
    if config_path is not None:
        return load_config(config_path)
    click.echo(f"fakeedge: note: no ./{DEFAULT_CONFIG}, so the built-in demo's config", err=True)
    return offline_demo_config()


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
    help="HOST:PORT of a TLS listener as well, with certificates from the local CA in keys_dir; "
    "overrides `tls_listen`.",
)
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="One line per request on stderr.")
@click.option(
    "--shutdown-timeout",
    default="8s",
    show_default=True,
    help="On SIGTERM or SIGINT, how long requests in flight may take to finish before they are cut.",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Once listening, write the readiness JSON (bound URLs, team domain, certs URL, apps) here, "
    "atomically; removed on stop.",
)
@click.option("--ready-json", is_flag=True, help="Once listening, print the readiness JSON as one line on stdout.")
@_errors
def serve(
    config_path: Path | None,
    listen: str | None,
    tls_listen: str | None,
    access_log: bool,
    shutdown_timeout: str,
    ready_file: Path | None = None,
    ready_json: bool = False,
) -> None:
    """Run the edge in front of your services (or the demo, with no config).

    SIGTERM or SIGINT (Ctrl-C) stops it gracefully, also as PID 1 in a container: it stops
    accepting, lets requests in flight finish within --shutdown-timeout, writes the access log
    and exits 0. A second signal stops it at once (exit 1).

    For test runners that start it as a subprocess: --ready-json prints one JSON line on stdout
    once it listens (nothing else is ever printed on stdout), --ready-file writes the same JSON
    to a file (docs/testing.md, "Any stack").
    """
    from .config import load_config, parse_duration, parse_host_port

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
    try:
        grace = parse_duration(shutdown_timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shutdown-timeout") from None
    if config_path is None and Path(DEFAULT_CONFIG).is_file():
        config_path = Path(DEFAULT_CONFIG)
    config = load_config(config_path) if config_path is not None else None
    try:
        with (
            contextlib.suppress(KeyboardInterrupt),  # a Ctrl-C before the signal handlers are in place
            asyncio.Runner(loop_factory=event_loop_factory()) as runner,
        ):
            runner.run(_serve(config, listen_addr, access_log, tls_addr, grace, ready=(ready_file, ready_json)))
    except asyncio.CancelledError:
        click.echo("fakeedge: stopped at once (second signal); requests in flight were cut", err=True)
        sys.exit(1)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when the ``fast`` extra installed it, else None (asyncio's own).

    uvloop runs the edge's event loop in C: about a third fewer instructions per proxied request
    (bench/README.md). ``FAKEEDGE_UVLOOP=0`` keeps asyncio's loop with uvloop installed.
    """
    if os.environ.get("FAKEEDGE_UVLOOP", "1") == "0":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """How the serve banner names the event loop: uvloop, or asyncio's with what uvloop would bring."""
    if type(loop).__module__.partition(".")[0] == "uvloop":
        return "uvloop"
    return "asyncio's own (the fast extra's uvloop makes a proxied request about a fifth cheaper: README, Speed)"


async def _serve(
    config: Any,
    listen: tuple[str, int] | None,
    access_log: bool,
    tls_listen: tuple[str, int] | None = None,
    shutdown_timeout: float = 8.0,
    ready: tuple[Path | None, bool] = (None, False),
) -> None:
    from .demo import DEMO_APP, demo_config, start_whoami
    from .edge import Edge
    from .web_app import AccessLog, connection_ceiling, raise_open_files_limit, start

    stop = _stop_signals()  # from the start: as PID 1, a signal during startup would be lost
    open_files = raise_open_files_limit()
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
    log_sink = AccessLog() if access_log else None
    try:
        runner, (_bound_host, bound_port) = await start(
            edge, host, port, access_log=log_sink, tls_listen=tls_listen, shutdown_timeout=shutdown_timeout
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
    ceiling = connection_ceiling(open_files)
    print(
        f"fakeedge: open files limit {open_files}: up to {ceiling} concurrent proxied connections (two descriptors each)"
        if ceiling is not None
        else "fakeedge: no open files limit: concurrent connections bounded by memory",
        file=out,
    )
    print(f"fakeedge: event loop {loop_name(asyncio.get_running_loop())}", file=out)
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
    ready_file, ready_json = ready
    document = ready_document(
        edge,
        config,
        _url("http", host, bound_port) if host is not None else None,
        _url("https", tls_listen[0], min(edge.tls_ports)) if tls_listen is not None else None,
    )
    try:
        if ready_file is not None:
            _write_atomically(ready_file, json.dumps(document, indent=2) + "\n")
        if ready_json:
            print(json.dumps(document), flush=True)  # stdout: this one line, nothing else
        signum = await stop
        print(
            f"fakeedge: {signum.name}: stopping; requests in flight may take up to {shutdown_timeout:g}s "
            "(a second signal stops at once)",
            file=out,
            flush=True,
        )
    finally:
        try:
            await runner.cleanup()  # stop accepting, let requests in flight finish, flush the access log
            for r in extra_runners:
                await r.cleanup()
        finally:
            if log_sink is not None:
                log_sink.flush()  # what was answered before a second signal cut the rest
            if ready_file is not None:
                ready_file.unlink(missing_ok=True)  # a stopped edge is not ready: no stale address
    print("fakeedge: stopped", file=out, flush=True)


def ready_document(edge: Any, config: Any, http_url: str | None, tls_url: str | None) -> dict[str, Any]:
    """What ``serve --ready-json``/``--ready-file`` announce once the edge listens.

    ``url`` is the plain-HTTP listener's (None with TLS only), ``tls_url`` the TLS one's;
    ``urls`` both. App domains are as configured (host[/path]); reach them on the edge's port.
    """
    return {
        "url": http_url,
        "tls_url": tls_url,
        "urls": [u for u in (http_url, tls_url) if u is not None],
        "team_domain": edge.team_domain,
        "certs_url": f"{edge.team_domain}/cdn-cgi/access/certs",
        "control_url": f"{edge.team_domain}/cdn-cgi/fakeedge/",
        "apps": [{"name": a.name, "domains": [str(d) for d in a.destinations], "aud": a.aud} for a in config.apps],
        "pid": os.getpid(),
    }


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees no file or the whole one (tmp + fsync + replace)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FakeEdgeError(f"--ready-file {path}: cannot write it ({exc.strerror})") from None


def _stop_signals() -> asyncio.Future[signal.Signals]:
    """Handle SIGTERM and SIGINT: the first resolves the returned future, a second cancels the
    calling task (stop at once).

    Handled explicitly: as PID 1 (a container's entrypoint) a signal with no handler is ignored
    by the kernel, and Python leaves SIGTERM without one.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(signum: signal.Signals) -> None:
        if received.done():
            task.cancel()
        else:
            received.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return received


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
@demo_config_option
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
    config_path: Path | None,
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
    from .mint import mint, offline_edge

    chosen = [name for name, on in flags.items() if on]
    if len(chosen) > 1:
        raise click.UsageError(
            "give one variant flag at most, got " + " ".join(f"--{n.replace('_', '-')}" for n in chosen)
        )
    if (email is None) == (service_token is None):
        raise click.UsageError("give --email (a user token) or --service-token (a service-token token)")
    overrides = dict(_claim(text) for text in claims)
    edge = offline_edge(_load_or_demo(config_path))
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
@demo_config_option
@click.option("--certs", "as_certs", is_flag=True, help="Print the /cdn-cgi/access/certs document instead.")
@_errors
def keys_show(config_path: Path | None, as_certs: bool) -> None:
    """Show the current key, and the previous one while it is still in certs (spec §3)."""
    from .keys import KeyStore

    config = _load_or_demo(config_path)
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
@demo_config_option
@click.option("--grace", default="7d", show_default=True, help="How long the previous key stays in certs.")
@_errors
def keys_rotate(config_path: Path | None, grace: str) -> None:
    """Make a new current key; the previous one stays in certs for the grace period (spec §3)."""
    from .config import parse_duration
    from .keys import KeyStore

    try:
        seconds = parse_duration(grace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--grace") from None
    config = _load_or_demo(config_path)
    now = time.time()
    store = KeyStore(config.keys_dir, now)
    old = store.current.kid
    click.echo(f"current  {store.rotate(now, seconds).kid}")
    click.echo(f"previous {old} (in certs until {_utc(now + seconds)})")
    click.echo(
        "fakeedge: note: an edge running on this keys_dir takes the new key up at its next "
        "certs request, sign-in or unknown token",
        err=True,
    )


@main.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG, show_default=True
)
@click.option(
    "--origin", default="http://127.0.0.1:8080", show_default=True, help="Where every app host's ingress goes."
)
@click.option("--team", help="The team name, when the sources hold no organisation.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@_errors
def import_(sources: tuple[Path, ...], output: Path, origin: str, team: str | None, force: bool) -> None:
    """Turn Cloudflare's Access configuration into a fakeedge config, and report what it emulates.

    SOURCES: the API's JSON (apps, policies, groups, service tokens, organisation; with or
    without the {"result": ...} envelope), `terraform show -json` output, or .tf files (needs
    python-hcl2); files or folders. Generated service-token secrets are printed once.
    """
    import yaml

    from .config import parse_config
    from .importer import collect, convert
    from .keys import _write_private

    cfg, report = convert(collect(sources), team=team, origin=origin)
    parse_config(cfg, source=str(output), base_dir=output.parent)  # the config must load as written
    if output.exists() and not force:
        raise FakeEdgeError(f"{output}: exists already; --force replaces it")
    header = "# fakeedge config imported from Cloudflare Access (fakeedge import); holds development secrets\n"
    _write_private(output, (header + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)).encode())
    click.echo(f"fakeedge: wrote {output} (mode 0600)")
    for line in report.lines():
        click.echo(line)


@main.command()
@config_option
@click.option("--strict", is_flag=True, help="Fail-open warnings are errors (exit 1).")
@_errors
def check(config_path: Path, strict: bool) -> None:
    """Validate a config, summarise its apps, hosts and AUDs, and warn of fail-open shapes.

    Each warning names the config key, why the shape lets requests reach an origin without
    Access, and what to change (docs/audit.md lists the shapes).
    """
    from .config import load_config
    from .config_audit import audit_config

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
    findings = audit_config(config)
    for finding in findings:
        click.echo(f"  warning: {finding}")
    if strict and findings:
        raise FakeEdgeError(f"{config_path}: {len(findings)} fail-open warning(s), and --strict makes them errors")


@main.command()
@demo_config_option
@click.argument("url")
@click.option("--email", help="Explain for a user signed in with this address.")
@click.option("--service-token", "service_token", help="Explain for this service token (name, id or client id).")
@click.option("--ip", default="127.0.0.1", show_default=True, help="The client address.")
@click.option(
    "--all", "everyone", is_flag=True, help="Judge URL for no credentials, every persona and every service token."
)
@_errors
def explain(
    config_path: Path | None, url: str, email: str | None, service_token: str | None, ip: str, everyone: bool
) -> None:
    """Show which ingress rule, app, policy and rule decide URL, and the outcome."""
    from .explain import explain as run
    from .explain import judge_all, table

    if email and service_token:
        raise click.UsageError("give --email or --service-token, not both")
    if everyone and (email or service_token):
        raise click.UsageError("--all judges every persona and service token; give no --email or --service-token")
    config = _load_or_demo(config_path)
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
    from .demo import offline_demo_config

    if config_path is None and Path(DEFAULT_CONFIG).is_file():
        config_path = Path(DEFAULT_CONFIG)
    if config_path is not None:
        return load_config(config_path).keys_dir
    return offline_demo_config().keys_dir


_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"YAML config whose keys_dir holds the CA. Default: ./{DEFAULT_CONFIG} if present, else the demo's.",
)


@main.command()
@config_option
@_errors
def health(config_path: Path) -> None:
    """Exit 0 if the edge this config describes serves its certs; for container health checks.

    Reads /cdn-cgi/access/certs from the plain listener (a wildcard address is read on loopback),
    else from the TLS listener as the team domain's host, trusting the local CA only.
    """
    from .config import load_config
    from .health import check

    click.echo(f"fakeedge: healthy: {check(load_config(config_path))}")


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
    FAKEEDGE_AUD_<APP NAME>, and, when the edge serves TLS (or --ca-file is given), the
    variables that make clients trust the local CA. A plain-HTTP config needs no CA: none is
    printed or created, so an eval of the output leaves the shell's own HTTPS alone.
    """
    from .config import load_config
    from .env import format_dotenv, origin_env
    from .tls import LocalCA

    config = load_config(config_path)
    cert: Path | str | None = ca_file
    if cert is None and config.tls_listen is not None:
        cert = LocalCA.load(config.keys_dir).cert_path
    click.echo(format_dotenv(origin_env(config, cert), export=export), nl=False)


EXIT_FAILED_OPEN = 1  # the origin accepted what it must refuse
EXIT_INCONCLUSIVE = 3  # a control was refused: the run proves nothing


@main.command()
@config_option
@click.argument("origin_url", metavar="ORIGIN_URL")
@click.option("--app", required=True, help="The app whose AUD the origin checks.")
@click.option("--path", help="The path to probe. Default: ORIGIN_URL's. A page that shows the user is best.")
@click.option("--email", help="The user of the valid tokens. Default: a persona the app admits.")
@click.option(
    "--accept-status",
    metavar="STATUSES",
    help="What the origin answers when it accepts, e.g. 200,204 or 200-299,302. Default: any 2xx.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Output."
)
@click.option("--junit", "junit", type=click.Path(dir_okay=False, path_type=Path), help="Also write JUnit XML here.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for each answer.")
@click.option("--stall", type=float, help="Seconds certs stalls in the certs_slow row. Default: timeout + 5.")
@click.option(
    "--rotation-wait",
    default=35.0,
    show_default=True,
    help="Seconds to retry the rotation rows while the origin waits out its certs refetch cooldown.",
)
@click.option(
    "--edge",
    "edge_url",
    help="Audit through this running edge's control API (e.g. http://127.0.0.1:8787) instead of starting one.",
)
@_errors
def audit(
    config_path: Path,
    origin_url: str,
    app: str,
    path: str | None,
    email: str | None,
    accept_status: str | None,
    fmt: str,
    junit: Path | None,
    timeout: float,
    stall: float | None,
    rotation_wait: float,
    edge_url: str | None,
) -> None:
    """Does the origin at ORIGIN_URL fail open? Send it the audit battery and print a verdict per case.

    Requests go straight to ORIGIN_URL (as an attacker who reached its address would) and
    through the edge. Without --edge, an edge starts on the config's listen address with a
    temporary copy of keys_dir (the audit rotates keys; yours are left alone).

    Exit status: 0 nothing wrongly accepted and every control passed; 1 the origin accepted
    something it must refuse (or an error); 3 inconclusive (a control was refused).
    """
    from .audit import Report, format_junit, format_report, parse_accept_status
    from .config import load_config

    accept = None
    if accept_status is not None:
        try:
            accept = parse_accept_status(accept_status)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--accept-status") from None
    config = load_config(config_path)
    options: dict[str, Any] = {
        "app": app, "path": path, "email": email, "timeout": timeout, "stall": stall, "rotation_wait": rotation_wait,
    }  # fmt: skip
    if edge_url is not None:
        report = Report.from_json(
            _control_audit(edge_url, config.admin_token, origin_url, options, sorted(accept) if accept else None)
        )
    else:
        try:
            report = asyncio.run(_audit_local(config, origin_url, accept, options))
        except ValueError as exc:
            raise FakeEdgeError(str(exc)) from None
    click.echo(format_report(report, "json" if fmt == "json" else "table"))
    if junit is not None:
        junit.write_text(format_junit(report), encoding="utf-8")
    if report.outcome != "ok":
        sys.exit(EXIT_FAILED_OPEN if report.outcome == "fail" else EXIT_INCONCLUSIVE)


async def _audit_local(config: Any, origin_url: str, accept: Any, options: dict[str, Any]) -> Any:
    """Start an edge like ``serve`` (on a temporary copy of keys_dir), run the audit, stop the edge."""
    import dataclasses
    import shutil
    import tempfile

    from .audit import run_audit
    from .edge import Edge
    from .web_app import start

    with tempfile.TemporaryDirectory(prefix="fakeedge-audit-") as tmp:
        keys_dir = Path(tmp) / "keys"
        if config.keys_dir.is_dir():
            shutil.copytree(config.keys_dir, keys_dir)
        else:  # a throwaway folder: no .gitignore or "created ... for private keys" warning
            keys_dir.mkdir(mode=0o711)
        edge = Edge.create(dataclasses.replace(config, keys_dir=keys_dir))
        host, port = config.listen or (None, 0)
        try:
            runner, _ = await start(edge, host, port, tls_listen=config.tls_listen)
        except OSError as exc:
            shown = f"{host}:{port}" if host is not None else "the tls_listen address"
            raise FakeEdgeError(
                f"cannot listen on {shown} ({exc.strerror}); if `fakeedge serve` runs there, "
                f"audit through it: fakeedge audit --edge {edge.team_domain or f'http://{host}:{port}'} ..."
            ) from None
        try:
            return await run_audit(edge, origin_url, accept=accept, **options)
        finally:
            await runner.cleanup()


def _control_audit(
    edge_url: str, admin_token: str | None, origin_url: str, options: dict[str, Any], accept: list[int] | None
) -> dict[str, Any]:
    """POST /cdn-cgi/fakeedge/audit on a running edge; its answer, or FakeEdgeError in one line."""
    body = {"origin": origin_url, **{k: v for k, v in options.items() if v is not None}}
    if accept is not None:
        body["accept_status"] = accept
    wait = options["timeout"] * 60 + 2 * options["rotation_wait"]  # the whole battery, not one answer
    return _control_post(edge_url, admin_token, "audit", body, timeout=wait)


@main.command()
@demo_config_option
@click.argument("email", required=False)
@click.option("--app", required=True, help="The app to sign in to.")
@click.option(
    "--service-token",
    "service_token",
    help="Instead of EMAIL: this service token's app cookie, for browser navigations (name, id or client id).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["storage-state", "netscape", "cookie"]),
    default="storage-state",
    show_default=True,
    help="Playwright storageState JSON, a Netscape cookie jar (curl -b, wget --load-cookies), or a Cookie: line.",
)
@click.option(
    "--edge",
    "edge_url",
    help="The running edge's team domain URL. Default: the config's listen address (with its team_domain as Host).",
)
@_errors
def login(
    config_path: Path | None, email: str | None, app: str, service_token: str | None, fmt: str, edge_url: str | None
) -> None:
    """Sign EMAIL in to a running `fakeedge serve` and print the cookies (no browser, no SSO page).

    The session is the running edge's own, through its control API (POST /cdn-cgi/fakeedge/login):
    logout, `sessions/revoke` and a reset end it. The edge must be running.
    """
    if (email is None) == (service_token is None):
        raise click.UsageError("give EMAIL or --service-token NAME, not both")
    config = _load_or_demo(config_path)
    host_header = None
    if edge_url is None:
        if config.listen is None or config.listen[1] == 0:
            raise FakeEdgeError(
                "the config has no fixed listen address to reach the running edge at; give --edge URL "
                "(its team domain, e.g. http://127.0.0.1:8787)"
            )
        edge_url = _url("http", *config.listen)
        if config.team_domain:
            host_header = urlsplit(config.team_domain).netloc
    body = {"app": app, "format": fmt, **({"email": email} if email else {"service_token": service_token})}
    answer = _control_post(edge_url, config.admin_token, "login", body, host_header=host_header)
    if fmt == "storage-state":
        click.echo(json.dumps(answer["storage_state"], indent=2))
    elif fmt == "netscape":
        click.echo(answer["netscape"], nl=False)
    else:
        click.echo(f"Cookie: {answer['cookie']}")


def _control_post(
    edge_url: str,
    admin_token: str | None,
    endpoint: str,
    body: dict[str, Any],
    *,
    host_header: str | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """POST ``/cdn-cgi/fakeedge/<endpoint>`` on a running edge; its answer, or FakeEdgeError in one line."""
    import urllib.error
    import urllib.request

    url = edge_url.rstrip("/") + "/cdn-cgi/fakeedge/" + endpoint
    headers = {"Content-Type": "application/json"}
    if admin_token is not None:
        headers["Authorization"] = f"Bearer {admin_token}"
    if host_header is not None:
        headers["Host"] = host_header  # the control API answers on the team domain only
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            answer: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc)["error"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        raise FakeEdgeError(f"{url}: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FakeEdgeError(f"{url}: no answer from the edge ({getattr(exc, 'reason', exc)})") from None
    return answer


if __name__ == "__main__":  # pragma: no cover
    main()
