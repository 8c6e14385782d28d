"""``fakeedge explain``: why a URL is routed, matched and decided the way it is. Pure: no I/O.

The local counterpart of Cloudflare's policy tester and ``cloudflared tunnel ingress rule``.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .config import Config, Rule
from .policy import AppIndex, Facts, Identity, IngressIndex, decide, normalize_path, split_host


def _rule_text(rule: Rule | None) -> str:
    if rule is None:
        return "-"
    value = rule.value
    if rule.kind == "group":
        value = value.name
    elif isinstance(value, tuple | frozenset):
        value = ", ".join(map(str, value))
    return f"{rule.kind} {value}" if value is not None else rule.kind


def explain(
    config: Config, url: str, *, email: str | None = None, service_token: str | None = None, ip: str = "127.0.0.1"
) -> list[str]:
    """Lines describing how the edge answers ``url`` for the given caller.

    Raises:
        ValueError: the URL has no host, the IP is not an address, or the service token is unknown.
    """
    parts = urlsplit(url if "://" in url else "http://" + url)
    parsed = split_host(parts.netloc.rpartition("@")[2])
    if parsed is None or not parsed[0]:
        raise ValueError(f"expected a URL such as https://admin.acme.test/path, got {url!r}")
    host = parsed[0]
    # the same host and path the edge judges: lower-case, no trailing dot, normalised (spec §14.1)
    path = normalize_path(parts.path or "/")
    address = ipaddress.ip_address(ip)
    lines = [f"url       {parts.scheme}://{host}{path}"]

    rule_index, rule = IngressIndex(config.ingress).route(host, path)
    shown = f"{rule.hostname or '*'}{' path ~ ' + rule.path.pattern if rule.path else ''}"
    lines.append(f"ingress   rule {rule_index}: {shown} -> {rule.service}")

    match = AppIndex(config.apps).match(host, path)
    if match is None:
        lines.append("app       none: no Access application covers this host and path")
        exempt = config.deny_unmatched_requests_exempted_zone_names
        if config.deny_unmatched_requests and not any(host == z or host.endswith("." + z) for z in exempt):
            lines.append("outcome   403 block page: deny_unmatched_requests (Require Access protection, spec §14.4)")
        elif rule.status is not None:
            # cloudflared's http_status:N: the edge answers itself, nothing is proxied
            lines.append(f"outcome   {rule.status} from the edge (ingress {rule.service}); no origin is reached")
        else:
            lines.append("outcome   proxied without Access (spoofable headers still stripped)")
        return lines
    app = match.app
    lines.append(f"app       {app.name!r} via {match.destination} (aud {app.aud})")
    for loser in match.losers:
        lines.append(f"          broader, lost: {loser}")

    who = None
    client_id = None
    if service_token is not None:
        token = next((t for t in config.service_tokens if service_token in (t.name, t.id, t.client_id)), None)
        if token is None:
            names = ", ".join(t.name for t in config.service_tokens) or "none"
            raise ValueError(f"no service token {service_token!r}; known: {names}")
        client_id = token.client_id
        lines.append(f"caller    service token {token.name} ({token.client_id}) from {address}")
    elif email is not None:
        user = config.user(email)
        who = Identity.for_email(email, user, default_country=config.default_country)
        lines.append(f"caller    {email} ({'persona' if user else 'typed address, no attributes'}) from {address}")
    else:
        lines.append(f"caller    no credentials, from {address}")

    country = who.country if who else config.default_country
    verdict = decide(app, Facts(address, country, client_id), who)
    policy = verdict.policy
    rule_text = "identity rules, decided at login" if verdict.outcome == "login" else _rule_text(verdict.rule)
    lines.append(
        f"policy    {policy.name!r} ({policy.decision}), rule {rule_text}"
        if policy
        else "policy    none matched: deny by default"
    )
    match verdict.outcome:
        case "service":
            outcome = "admit via Service Auth: the origin gets the service-token assertion"
        case "bypass":
            outcome = "bypass: proxied with no assertion"
        case "allow":
            outcome = "admit: the origin gets the user assertion and email header"
        case "deny":
            outcome = f"302 to {app.custom_deny_url}" if app.custom_deny_url else "403 block page (identity refused)"
        case "login":
            outcome = "302 to the team domain's login (401 with X-Requested-With: XMLHttpRequest)"
        case "forbidden":
            if not app.has_identity_policy:
                outcome = (
                    "401 (service_auth_401_redirect)"
                    if app.service_auth_401_redirect
                    else "403: only Service Auth can pass"
                )
            elif app.custom_non_identity_deny_url:
                outcome = f"302 to {app.custom_non_identity_deny_url}"
            else:
                outcome = "403 block page before any login (non-identity rules refuse)"
    if client_id is not None and config.strict_service_token_auth and verdict.outcome not in ("service", "bypass"):
        # spec §14.3: only Service Auth (or Bypass) admits a token; never a login
        outcome = "403: strict service-token auth, no Service Auth policy admits this token"
    if rule.status is not None and verdict.outcome in ("service", "bypass", "allow"):
        outcome += f", then the ingress answers {rule.status}"
    lines.append(f"outcome   {outcome}")
    return lines
