"""``fakeedge check``: fail-open shapes in an edge config, each with why it is risky. Pure: no I/O.

The config loads (every one of these is valid Cloudflare configuration); these are the shapes
that let requests reach an origin without Access when the author meant otherwise. Routing is
judged with the edge's own indexes, so a finding is what ``fakeedge serve`` would do. A service
token under an Allow policy is not here: the config refuses it at load (spec §5).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from .config import App, Config, Policy, Rule
from .policy import AppIndex, IngressIndex

Shape = Literal[
    "unused-service-token",
    "bypass-beside-protected",
    "unprotected-sibling",
    "deep-wildcard-ingress",
    "deep-wildcard-certificate",
    "path-app-leaves-host-open",
    "duplicate-destination",
    "shadowed-app",
]
PROBE_LABEL = "fakeedge-check"  # a label no config names, for hosts a wildcard covers


@dataclass(frozen=True, slots=True)
class Finding:
    """One fail-open shape: its name, the config key it is about, and why it is risky."""

    shape: Shape
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message} [{self.shape}]"


def audit_config(config: Config) -> list[Finding]:
    """Every fail-open shape in ``config``, in config order."""
    apps = AppIndex(config.apps)
    ingress = IngressIndex(config.ingress)
    return [
        *_service_tokens(config),
        *_duplicates(config),
        *_bypass_beside_protected(config),
        *_deep_wildcard_certificates(config),
        *_open_ingress(config, apps, ingress),
    ]


def _policy_rules(policy: Policy) -> Iterator[Rule]:
    for rule in (*policy.include, *policy.require, *policy.exclude):
        if rule.kind == "group":
            group = rule.value
            yield from (*group.include, *group.require, *group.exclude)
        else:
            yield rule


def _service_tokens(config: Config) -> Iterator[Finding]:
    used: set[str] = set()
    any_token = False
    for app in config.apps:
        for policy in app.policies:
            if policy.decision != "non_identity":
                continue
            for rule in _policy_rules(policy):
                used.update([rule.value] if rule.kind == "service_token" else [])
                any_token |= rule.kind == "any_valid_service_token"
    if any_token:
        return
    for i, token in enumerate(config.service_tokens):
        if token.client_id not in used:
            yield Finding(
                "unused-service-token",
                f"service_tokens[{i}]",
                f"service token {token.name!r} is in no Service Auth (non_identity) policy: Cloudflare answers it "
                "with the login 302, and a client that follows redirects may treat the login page as success",
            )


def _bypasses_everyone(app: App) -> Policy | None:
    for policy in app.policies:
        if policy.decision == "bypass" and any(r.kind == "everyone" for r in policy.include):
            return policy
    return None


def _protects(app: App) -> bool:
    return any(p.decision in ("allow", "non_identity") for p in app.policies)


def _bypass_beside_protected(config: Config) -> Iterator[Finding]:
    for i, app in enumerate(config.apps):
        policy = _bypasses_everyone(app)
        if policy is None:
            continue
        hosts = {d.host for d in app.destinations}
        for other in config.apps:
            if other is app or not _protects(other):
                continue
            shared = [str(d) for d in other.destinations if d.host in hosts]
            if shared:
                yield Finding(
                    "bypass-beside-protected",
                    f"apps[{i}]",
                    f"app {app.name!r} bypasses Access for everyone (policy {policy.name!r}) on "
                    f"{', '.join(map(str, app.destinations))}, a host where app {other.name!r} protects "
                    f"{', '.join(shared)}: the most specific app wins (spec §7.2), so check that every bypassed "
                    "path is public and that the protected paths are covered exactly",
                )
                break


def _duplicates(config: Config) -> Iterator[Finding]:
    owner: dict[str, str] = {}
    for i, app in enumerate(config.apps):
        lost = []
        for dest in app.destinations:
            key = str(dest)
            if key in owner:
                lost.append(key)
                yield Finding(
                    "duplicate-destination",
                    f"apps[{i}]",
                    f"app {app.name!r} names {key}, as app {owner[key]!r} does before it: one of them never "
                    "applies there, and its policies are not the ones you read",
                )
            else:
                owner[key] = app.name
        if lost and len(lost) == len(app.destinations):
            yield Finding(
                "shadowed-app",
                f"apps[{i}]",
                f"app {app.name!r} is never used: every destination it names belongs to an earlier app",
            )


def _deep_wildcard_certificates(config: Config) -> Iterator[Finding]:
    for i, app in enumerate(config.apps):
        for dest in app.destinations:
            first, _, rest = dest.host.partition(".")
            if "*" in first and rest.count(".") >= 2:
                zone = ".".join(rest.split(".")[-2:])
                yield Finding(
                    "deep-wildcard-certificate",
                    f"apps[{i}]",
                    f"app {app.name!r} covers {dest.host}, two levels under {zone}: the edge certificate browsers "
                    f"get covers {zone} and *.{zone} only, so those hosts need an advanced certificate "
                    "(or one label: pr-1-dev.example.com, not pr-1.dev.example.com)",
                )


def _probe_hosts(hostname: str) -> list[tuple[str, bool]]:
    """Hosts an ingress hostname routes: (host, deeper than one label under the wildcard)."""
    if not hostname.startswith("*"):
        return [(hostname, False)]
    suffix = hostname[1:]
    one = PROBE_LABEL + suffix if suffix.startswith(".") else PROBE_LABEL + "." + suffix.lstrip(".")
    return [(one, False), (f"{PROBE_LABEL}.{one}", True)]


def _parent(host: str) -> str:
    return host.partition(".")[2]


def _open_ingress(config: Config, apps: AppIndex, ingress: IngressIndex) -> Iterator[Finding]:
    protected_hosts = {
        d.host for app in config.apps if _protects(app) and _bypasses_everyone(app) is None for d in app.destinations
    }
    for i, rule in enumerate(config.ingress):
        if rule.hostname is None or not rule.service.startswith(("http://", "https://")):
            continue
        if rule.path is not None and not rule.path.search("/"):
            continue  # a path-only rule: judged by the apps on its host, not here
        for host, deep in _probe_hosts(rule.hostname):
            if ingress.route(host, "/")[0] != i or apps.match(host, "/") is not None:
                continue
            path_apps = [a for a in config.apps if any(d.host == host and d.path for d in a.destinations)]
            if path_apps:
                covered = ", ".join(str(d) for a in path_apps for d in a.destinations if d.host == host)
                yield Finding(
                    "path-app-leaves-host-open",
                    f"ingress[{i}]",
                    f"only {covered} is behind Access; the rest of {host} reaches {rule.service} without it: "
                    f"add an app for {host} (the path app stays more specific)",
                )
            elif deep:
                yield Finding(
                    "deep-wildcard-ingress",
                    f"ingress[{i}]",
                    f"{rule.hostname} routes hosts at any depth (cloudflared, spec §9.1) but an Access wildcard "
                    f"covers one label (spec §7.2): {host} reaches {rule.service} without Access; "
                    "add an app for the deeper hosts or route one label only",
                )
            else:
                siblings = sorted(h for h in protected_hosts if _parent(h) == _parent(host) and h != host)
                if siblings:
                    yield Finding(
                        "unprotected-sibling",
                        f"ingress[{i}]",
                        f"{host} reaches {rule.service} without Access, while its sibling {siblings[0]} is "
                        f"protected: add an app for {host}, or a Bypass app if it is public on purpose",
                    )
