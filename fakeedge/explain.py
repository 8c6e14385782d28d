"""``fakeedge explain``: why a URL is routed, matched and decided the way it is. Pure: no I/O.

The local counterpart of Cloudflare's policy tester and ``cloudflared tunnel ingress rule``. The
same words explain each request in the journal (:mod:`fakeedge.record`) and the access log.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import assert_never
from urllib.parse import urlsplit

from .config import App, Config, Policy, Rule
from .policy import AppIndex, Facts, Identity, IngressIndex, Verdict, decide, match_policy, normalize_path, split_host

__all__ = [
    "Judgement",
    "explain",
    "judge",
    "judge_all",
    "policy_text",
    "rule_text",
    "table",
    "verdict_reason",
    "why_not",
]

# Cloudflare's names for the policy actions (spec §6.1)
ACTION = {"allow": "Allow", "deny": "Block", "bypass": "Bypass", "non_identity": "Service Auth"}


def rule_text(rule: Rule | None) -> str:
    """A rule as the config spells it: ``email_domain acme.test``, ``group admins``, ``everyone``."""
    if rule is None:
        return "-"
    value = rule.value
    if rule.kind == "group":
        value = value.name
    elif isinstance(value, tuple | frozenset):
        value = ", ".join(map(str, value))
    text = f"{rule.kind} {value}" if value is not None else rule.kind
    return f"{text} via {rule.identity_provider_id}" if rule.identity_provider_id is not None else text


def policy_text(policy: Policy) -> str:
    """``Allow policy 'staff'``."""
    return f"{ACTION.get(policy.decision, policy.decision)} policy {policy.name!r}"


def why_not(policy: Policy, facts: Facts, who: Identity | None) -> str:
    """Why ``policy`` did not match: the include rules none of which matched, or the rule that failed."""
    matched, rule = match_policy(policy, facts, who)
    if matched:
        return f"{policy_text(policy)}: matched {rule_text(rule)}"
    if matched is None:
        return f"{policy_text(policy)}: needs a login"
    if rule is None:
        rules = ", ".join(rule_text(r) for r in policy.include)
        return f"{policy_text(policy)}: no include rule matched ({rules})"
    if rule in policy.require:
        return f"{policy_text(policy)}: require {rule_text(rule)} failed"
    return f"{policy_text(policy)}: exclude {rule_text(rule)} matched"


def verdict_reason(app: App, verdict: Verdict, facts: Facts, who: Identity | None, *, short: bool = False) -> str:
    """Which rule of which policy decided ``verdict``, in words.

    Args:
        app: the app whose policies decided.
        verdict: what :func:`fakeedge.policy.decide` returned for ``facts`` and ``who``.
        facts: the request's non-identity facts.
        who: the signed-in identity, if any.
        short: the access log's form: the rule, or what failed, without the policy (the log names it).
    """
    policy, rule = verdict.policy, verdict.rule
    match verdict.outcome:
        case "service" | "bypass" | "allow":
            assert policy is not None
            return f"matched {rule_text(rule)}" if short else f"{policy_text(policy)} matched {rule_text(rule)}"
        case "deny" if policy is not None:
            return f"matched {rule_text(rule)}" if short else f"{policy_text(policy)} matched {rule_text(rule)}"
        case "deny":
            assert who is not None
            if short:
                return f"no policy admits {who.email}"
            tried = [why_not(p, facts, who) for p in app.policies if p.decision == "allow"]
            return f"no policy admits {who.email}: " + ("; ".join(tried) or "the app has no Allow policy")
        case "login":
            assert policy is not None
            return "not signed in" if short else f"not signed in: {policy_text(policy)} needs a login"
        case "forbidden" if policy is not None:
            if short:
                return f"matched {rule_text(rule)} before login"
            return f"{policy_text(policy)} matched {rule_text(rule)} before any login"
        case "forbidden":
            if short:
                return "no policy can admit this request"
            tried = [why_not(p, facts, None) for p in app.policies]
            return "no policy can admit this request: " + ("; ".join(tried) or "the app has no policy")
        case _:
            assert_never(verdict.outcome)


@dataclass(frozen=True, slots=True)
class Judgement:
    """How the edge answers one URL for one caller: what ``explain`` prints, and one row of ``--all``.

    Attributes:
        caller: ``alice@acme.test``, ``service token ci-deploy-bot`` or ``no credentials``.
        app: the app covering the URL, or None (proxied without Access).
        policy: the policy that decided, or None.
        outcome: the verdict (``allow``, ``service``, ``bypass``, ``deny``, ``login``, ``forbidden``),
            or ``none`` without an app.
        admitted: whether the request reaches the origin.
        answer: what the edge answers, in words.
        reason: which rule of which policy decided, in words.
        lines: ``fakeedge explain``'s output.
    """

    caller: str
    app: str | None
    policy: str | None
    outcome: str
    admitted: bool
    answer: str
    reason: str
    lines: tuple[str, ...]


def judge(
    config: Config, url: str, *, email: str | None = None, service_token: str | None = None, ip: str = "127.0.0.1"
) -> Judgement:
    """How the edge answers ``url`` for a user signed in as ``email``, a service token, or no one.

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

    who = None
    client_id = None
    if service_token is not None:
        token = next((t for t in config.service_tokens if service_token in (t.name, t.id, t.client_id)), None)
        if token is None:
            names = ", ".join(t.name for t in config.service_tokens) or "none"
            raise ValueError(f"no service token {service_token!r}; known: {names}")
        client_id = token.client_id
        caller = f"service token {token.name}"
        caller_line = f"caller    service token {token.name} ({token.client_id}) from {address}"
    elif email is not None:
        user = config.user(email)
        who = Identity.for_email(email, user, default_country=config.default_country)
        caller = email
        caller_line = f"caller    {email} ({'persona' if user else 'typed address, no attributes'}) from {address}"
    else:
        caller = "no credentials"
        caller_line = f"caller    no credentials, from {address}"

    rule_index, rule = IngressIndex(config.ingress).route(host, path)
    shown = f"{rule.hostname or '*'}{' path ~ ' + rule.path.pattern if rule.path else ''}"
    lines.append(f"ingress   rule {rule_index}: {shown} -> {rule.service}")

    match = AppIndex(config.apps).match(host, path)
    if match is None:
        lines.append("app       none: no Access application covers this host and path")
        reason = "no Access application covers this host and path"
        exempt = config.deny_unmatched_requests_exempted_zone_names
        blocked = config.deny_unmatched_requests and not any(host == z or host.endswith("." + z) for z in exempt)
        if blocked:
            reason += "; deny_unmatched_requests blocks it"
            answer = "403 block page: deny_unmatched_requests (Require Access protection, spec §14.4)"
        elif rule.status is not None:
            # cloudflared's http_status:N: the edge answers itself, nothing is proxied
            answer = f"{rule.status} from the edge (ingress {rule.service}); no origin is reached"
        else:
            answer = "proxied without Access (spoofable headers still stripped)"
        lines.append(f"outcome   {answer}")
        admitted = rule.status is None and not blocked
        return Judgement(caller, None, None, "none", admitted, answer, reason, tuple(lines))
    app = match.app
    lines.append(f"app       {app.name!r} via {match.destination} (aud {app.aud})")
    for loser in match.losers:
        lines.append(f"          broader, lost: {loser}")
    lines.append(caller_line)

    country = who.country if who else config.default_country
    facts = Facts(address, country, client_id)
    verdict = decide(app, facts, who)
    policy = verdict.policy
    rule_shown = "identity rules, decided at login" if verdict.outcome == "login" else rule_text(verdict.rule)
    lines.append(
        f"policy    {policy.name!r} ({policy.decision}), rule {rule_shown}"
        if policy
        else "policy    none matched: deny by default"
    )
    match verdict.outcome:
        case "service":
            answer = "admit via Service Auth: the origin gets the service-token assertion"
        case "bypass":
            answer = "bypass: proxied with no assertion"
        case "allow":
            answer = "admit: the origin gets the user assertion and email header"
        case "deny":
            answer = f"302 to {app.custom_deny_url}" if app.custom_deny_url else "403 block page (identity refused)"
        case "login":
            answer = "302 to the team domain's login (401 with X-Requested-With: XMLHttpRequest)"
        case "forbidden":
            if not app.has_identity_policy:
                answer = (
                    "401 (service_auth_401_redirect)"
                    if app.service_auth_401_redirect
                    else "403: only Service Auth can pass"
                )
            elif app.custom_non_identity_deny_url:
                answer = f"302 to {app.custom_non_identity_deny_url}"
            else:
                answer = "403 block page before any login (non-identity rules refuse)"
        case _:
            assert_never(verdict.outcome)
    admitted = verdict.outcome in ("service", "bypass", "allow")
    reason = verdict_reason(app, verdict, facts, who)
    if client_id is not None and config.strict_service_token_auth and verdict.outcome not in ("service", "bypass"):
        # spec §14.3: only Service Auth (or Bypass) admits a token; never a login
        answer = "403: strict service-token auth, no Service Auth policy admits this token"
        reason = f"strict service-token auth: {reason}"
        admitted = False
    if rule.status is not None and admitted:
        answer += f", then the ingress answers {rule.status}"
    lines.append(f"why       {reason}")
    lines.append(f"outcome   {answer}")
    return Judgement(
        caller, app.name, policy.name if policy else None, verdict.outcome, admitted, answer, reason, tuple(lines)
    )


def explain(
    config: Config, url: str, *, email: str | None = None, service_token: str | None = None, ip: str = "127.0.0.1"
) -> list[str]:
    """Lines describing how the edge answers ``url`` for the given caller.

    Raises:
        ValueError: the URL has no host, the IP is not an address, or the service token is unknown.
    """
    return list(judge(config, url, email=email, service_token=service_token, ip=ip).lines)


def judge_all(config: Config, url: str, *, ip: str = "127.0.0.1") -> list[Judgement]:
    """The bulk policy tester: ``url`` judged for no credentials, every persona and every service token.

    Raises:
        ValueError: the URL has no host or the IP is not an address.
    """
    rows = [judge(config, url, ip=ip)]
    rows += [judge(config, url, email=user.email, ip=ip) for user in config.users]
    rows += [judge(config, url, service_token=token.client_id, ip=ip) for token in config.service_tokens]
    return rows


def table(rows: list[Judgement]) -> list[str]:
    """``fakeedge explain --all``'s table: who gets in, by which policy, and why."""
    head = ("caller", "in", "policy", "decision", "why")
    cells = [(r.caller, "yes" if r.admitted else "no", r.policy or "-", r.outcome, r.reason) for r in rows]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(4)]
    return ["  ".join(c[i].ljust(widths[i]) for i in range(4)) + "  " + c[4] for c in [head, *cells]]
