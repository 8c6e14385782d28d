"""Every key of a fakeedge config, declared once: where it goes, its type, its default, what it does.

``config.py`` takes its known-key sets (and so its "unknown key ... did you mean" errors) and
its defaults (booleans, durations, the listen address, ...) from :data:`SECTIONS`, and ``python -m fakeedge.options`` writes ``docs/config-reference.md`` from it;
``tests/test_options.py`` fails when that file is stale or the parser accepts a key declared
nowhere. A pure module: no I/O, nothing from the rest of the package.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["REQUIRED", "SECTIONS", "Derived", "Option", "Section", "keys", "option", "reference", "section"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()  # the default of a key that must be given


class Derived(str):
    """A default that is not one value but worked out as the words say (e.g. "the name")."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Option:
    """One key of a mapping in the config.

    Args:
        key: the YAML key, exactly as written in a config.
        type: what the value is, in the reference's words.
        default: the value that writing nothing means, as one would write it in YAML; ``None``
            for "not set", :data:`REQUIRED` for a key that must be given, :class:`Derived`
            words for a default worked out from other values.
        help: what the key does, one line.
        honoured: False for a key accepted only so that a copied cloudflared config loads;
            fakeedge reports it as not emulated (only cloudflared's ``originRequest`` has these).
        refused: for a key of Cloudflare's that fakeedge cannot honour yet, why and what to do
            instead: a config that sets it is an error saying so, never silently ignored.
    """

    key: str
    type: str
    default: Any
    help: str
    honoured: bool = True
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class Section:
    """A mapping of the config with a fixed set of keys, found at the key paths in ``where``."""

    id: str
    where: tuple[str, ...]
    about: str
    options: tuple[Option, ...]


_RULE_LISTS = "include[], exclude[], require[] of policies[], apps[].policies[] and groups[]"

# fmt: off
SECTIONS: tuple[Section, ...] = (
    Section("top", ("",), "The file itself: the team, the listeners, and the lists below.", (
        Option("team", "string", REQUIRED, "the team name: the first label of <team>.cloudflareaccess.com (lower-case letters, digits, '-')"),
        Option("team_domain", "URL", None, "the team domain, the JWTs' iss; unset: http://<listen address> with the bound port"),
        Option("listen", "HOST:PORT or off", "127.0.0.1:8787", "where plain HTTP is served (:PORT alone binds 127.0.0.1; port 0: any free port); off: TLS only"),
        Option("keys_dir", "path", "keys", "where the signing keys and the local CA are kept, owner-only; relative to the config's folder"),
        Option("users", "list of users", [], "personas offered on the sign-in page; an address typed there that matches one gets its attributes"),
        Option("allow_any_email", "boolean", True, "the sign-in page accepts any address, not only the personas'"),
        Option("one_time_pin", "boolean", False, "sign-in asks for a one-time PIN (printed in the log) after the address"),
        Option("default_country", "country code", "US", "the country (ISO 3166 alpha-2) of requests and identities that name none"),
        Option("service_tokens", "list of service tokens", [], "service tokens (CF-Access-Client-Id / CF-Access-Client-Secret) that policies can name"),
        Option("apps", "list of apps", [], "the Access applications: hosts and paths behind Access, with their policies"),
        Option("groups", "list of groups", [], "Access groups: named rule sets that rules reference with {group: {id: ...}}"),
        Option("email_lists", "mapping: name -> list of email addresses", {}, "lists that {email_list: {id: <name>}} rules match against"),
        Option("ip_lists", "mapping: name -> list of IP addresses or CIDRs", {}, "lists that {ip_list: {id: <name>}} rules match against"),
        Option("ingress", "list of ingress rules", [], "cloudflared-style routing to origins, first match wins; unset: every host answers 404"),
        Option("strict_service_token_auth", "boolean", True, "token headers that cannot authenticate get 401, a token no Service Auth policy admits 403, never the login redirect (spec §14.3); false: the legacy behaviour"),
        Option("logout_delay", "duration", "0s", "how long after a logout the session stops working everywhere (Cloudflare: 20-30 s)"),
        Option("origin_timeout", "duration", "100s", "how long an origin may stay silent before the edge answers 504 (or cuts a started response)"),
        Option("tls_listen", "HOST:PORT", None, "where HTTPS is served with certificates from the local CA (:PORT alone binds 127.0.0.1)"),
        Option("ingress_file", "path", None, "a cloudflared config.yml whose ingress (and originRequest defaults) route instead of ingress:"),
        Option("branding", "branding", None, "the look of the sign-in and block pages"),
        Option("admin_token", "string (16+ characters)", None, "opens the control API and inspector (/cdn-cgi/fakeedge/) to callers that send it as a bearer token, and only to them"),
        Option("policies", "list of policies", [], "reusable policies, defined once and referenced from apps by id or name (spec §14.6)"),
        Option("deny_unmatched_requests", "boolean", False, "Require Access protection: a host no app covers gets 403 and never reaches its origin (spec §14.4)"),
        Option("deny_unmatched_requests_exempted_zone_names", "list of zone names", [], "zones (and their subdomains) left out of deny_unmatched_requests"),
        Option("mfa_config", "MFA settings (without mfa_disabled)", None, "the organisation's independent MFA settings (spec §14.5)"),
        Option("mfa_required_for_all_apps", "boolean", False, "every app asks for a second factor after sign-in unless it or its policy opts out (spec §14.5)"),
        Option("journal", "whole number, 0 to 1,000,000", 1000, "how many requests the inspector and GET /cdn-cgi/fakeedge/requests keep; 0: none"),
    )),
    Section("branding", ("branding",), "Cloudflare's Custom Pages settings for the sign-in and block pages.", (
        Option("name", "string", "fakeedge · Cloudflare Access", "the organisation name shown on the pages"),
        Option("logo_url", "http(s) URL, path or data:image URL", None, "the logo shown on the pages"),
        Option("background_color", "colour (#rgb or #rrggbb)", None, "the page background"),
        Option("header_color", "colour (#rgb or #rrggbb)", None, "the header bar"),
        Option("button_color", "colour (#rgb or #rrggbb)", "#f38020", "the buttons"),
        Option("description", "text (may span lines)", None, "a paragraph under the title"),
    )),
    Section("user", ("users[]",), "A persona on the sign-in page; its attributes go into JWTs and identity rules.", (
        Option("email", "email address", REQUIRED, "the address that signs in as this persona"),
        Option("name", "string", Derived("the address's local part"), "the display name (get-identity's name)"),
        Option("groups", "list of strings", [], "IdP groups: matched by {oidc: {claim_name: groups, ...}} rules and returned by get-identity"),
        Option("github_orgs", "list of strings", [], "GitHub organisations, matched by github-organization rules"),
        Option("country", "country code", Derived("default_country's"), "the identity's country (ISO 3166 alpha-2)"),
        Option("amr", "list of strings", ["pwd"], "authentication methods (RFC 8176) the IdP reports; auth_method rules and MFA read them"),
        Option("idp", "string", "fakeedge", "the identity provider's id, matched by login_method rules"),
        Option("custom", "mapping of JSON values", None, "extra IdP claims: in get-identity's custom, and matched by oidc rules"),
    )),
    Section("service_token", ("service_tokens[]",), "A service token (spec §5, §14.3).", (
        Option("name", "string", REQUIRED, "the token's name; policies and logs refer to it by name or id"),
        Option("id", "string", Derived("a UUID derived from team and name"), "the token's id, as {service_token: {token_id: ...}} names it"),
        Option("client_id", "string", REQUIRED, "the CF-Access-Client-Id value (unique)"),
        Option("client_secret", "string", REQUIRED, "the CF-Access-Client-Secret value, compared in constant time"),
        Option("previous_client_secrets", "list of previous secrets", [], "rotated secrets that still work until each one's expires_at (spec §14.3)"),
        Option("expires_at", "RFC 3339 time", None, "when the token stops working; unset: never"),
        Option("disabled", "boolean", False, "a disabled token authenticates nothing"),
    )),
    Section("previous_client_secret", ("service_tokens[].previous_client_secrets[]",), "A rotated secret in its grace period.", (
        Option("client_secret", "string", REQUIRED, "the old secret"),
        Option("expires_at", "RFC 3339 time", REQUIRED, "when the grace ends and the old secret stops working"),
    )),
    Section("group", ("groups[]",), "An Access group: rules defined once, used by {group: {id: ...}}.", (
        Option("id", "string", Derived("the name"), "what {group: {id: ...}} names (the name works too)"),
        Option("name", "string", REQUIRED, "the group's name"),
        Option("include", "list of rules", REQUIRED, "a member matches one of these (OR)"),
        Option("exclude", "list of rules", [], "a member matches none of these"),
        Option("require", "list of rules", [], "a member matches all of these (AND)"),
    )),
    Section("policy", ("policies[]", "apps[].policies[]"), "A policy: a decision and the rules that select who gets it (spec §6).", (
        Option("name", "string", Derived("its key path"), "the name logs, explain and the inspector show; a reusable policy needs one"),
        Option("decision", "allow, deny, bypass or non_identity", REQUIRED, "what a match decides; the dashboard's Allow, Block, Bypass and Service Auth work too"),
        Option("include", "list of rules", REQUIRED, "the policy matches when one of these matches (OR)"),
        Option("exclude", "list of rules", [], "the policy does not match when one of these matches"),
        Option("require", "list of rules", [], "the policy matches only when all of these match (AND)"),
        Option("session_duration", "duration", None, "the app session's length under this policy; unset: the app's (spec §1.6)"),
        Option("precedence", "whole number from 1", Derived("its place in the app's list"), "the order an app's policies run in (unique per app); not allowed on a reusable policy itself (spec §6.4)"),
        Option("id", "string", Derived("a reusable policy's: a UUID derived from team and name"), "a reusable policy's id, which apps may reference it by"),
        Option("purpose_justification_required", "boolean", False, "an Allow policy asks why once per session before the app (spec §14.5)"),
        Option("purpose_justification_prompt", "string", None, "the question on the justification page"),
        Option("mfa_config", "MFA settings", None, "this policy's independent MFA settings, over the app's and the organisation's"),
        Option("approval_required", "boolean", False, "temporary authentication: each sign-in waits for an approver's grant (spec §14.5)"),
        Option("approval_groups", "list of approver groups", None, "who may approve (Cloudflare's email_addresses, approvals_needed, email_list_uuid)",
               refused="fakeedge does not check who approves: whoever may call POST /cdn-cgi/fakeedge/approvals approves; remove it (approval_required alone works)"),
    )),
    Section("policy_reference", ("apps[].policies[] naming a reusable policy",), "An app's reference to a reusable policy: a bare id or name, or this mapping (spec §14.6).", (
        Option("id", "string", None, "the reusable policy's id (or name)"),
        Option("name", "string", None, "the reusable policy's name, when no id is given"),
        Option("precedence", "whole number from 1", Derived("its place in the app's list"), "where the policy runs among the app's policies"),
    )),
    Section("app", ("apps[]",), "A self-hosted Access application (spec §1, §7).", (
        Option("name", "string", REQUIRED, "the app's name (unique); the control API and CLI name apps by it"),
        Option("domain", "host[/path]", None, "the primary host[/path] (cf-access-domain); a wildcard may open the first label; one of domain, domains, self_hosted_domains or destinations is required"),
        Option("domains", "list of host[/path]", [], "more hosts and paths the app covers"),
        Option("self_hosted_domains", "list of host[/path]", [], "the API's older name for domains"),
        Option("destinations", "list of host[/path] or {type: public, uri: ...}", [], "the API's newer name for domains"),
        Option("aud", "64 lower-case hex characters", Derived("derived from team and name"), "the app's AUD tag: the JWTs' aud"),
        Option("session_duration", "duration", "24h", "how long the app's CF_Authorization session lasts"),
        Option("policies", "list of policies or policy references", [], "the app's policies, run by precedence"),
        Option("same_site_cookie_attribute", "none, lax or strict", None, "the CF_Authorization cookie's SameSite attribute; unset: SameSite=None"),
        Option("http_only_cookie_attribute", "boolean", True, "the CF_Authorization cookie is HttpOnly"),
        Option("path_cookie_attribute", "boolean", False, "the CF_Authorization cookie's Path is the app's first path (cut before a *), else /"),
        Option("enable_binding_cookie", "boolean", False, "a CF_Binding cookie ties the session to the browser"),
        Option("service_auth_401_redirect", "boolean", False, "an app only Service Auth can pass answers a request without credentials 401 instead of 403"),
        Option("read_service_tokens_from_header", "header name", None, "one header carrying {\"cf-access-client-id\": ..., \"cf-access-client-secret\": ...} as JSON"),
        Option("options_preflight_bypass", "boolean", False, "CORS preflights reach the origin without Access; not with cors_headers"),
        Option("cors_headers", "CORS settings", None, "the edge answers CORS preflights itself with these (spec §7.4)"),
        Option("custom_deny_url", "http(s) URL", None, "a person refused by the policies is redirected here instead of the block page"),
        Option("custom_non_identity_deny_url", "http(s) URL", None, "a request refused on non-identity grounds is redirected here"),
        Option("custom_deny_message", "text (may span lines)", None, "the message on the block page"),
        Option("type", "self_hosted", "self_hosted", "the app type; only self_hosted apps are emulated"),
        Option("oauth_configuration", "managed OAuth settings", None, "managed OAuth for non-browser clients (spec §14.2)"),
        Option("eager_redirect_cookie", "boolean", Derived("eager when the app has at most five domains"), "after login, set the cookie on every concrete domain (true) or lazily (false) (spec §14.6)"),
        Option("mfa_config", "MFA settings", None, "the app's independent MFA settings, over the organisation's"),
    )),
    Section("destination", ("apps[].destinations[]", "apps[].domains[]", "apps[].self_hosted_domains[]"), "A destination written as the API's object.", (
        Option("type", "public", "public", "the destination type; only public ones are emulated"),
        Option("uri", "host[/path]", REQUIRED, "the host[/path] covered"),
    )),
    Section("cors_headers", ("apps[].cors_headers",), "How the edge answers CORS preflights for the app (spec §7.4).", (
        Option("allow_all_origins", "boolean", False, "any Origin is allowed"),
        Option("allowed_origins", "list of origins", [], "the Origins allowed"),
        Option("allow_all_methods", "boolean", False, "any method is allowed"),
        Option("allowed_methods", "list of methods", [], "the methods allowed"),
        Option("allow_all_headers", "boolean", False, "any request header is allowed"),
        Option("allowed_headers", "list of header names", [], "the request headers allowed"),
        Option("allow_credentials", "boolean", False, "Access-Control-Allow-Credentials: true"),
        Option("max_age", "whole seconds", None, "Access-Control-Max-Age"),
    )),
    Section("oauth_configuration", ("apps[].oauth_configuration",), "Managed OAuth (spec §14.2), under the API's names; see docs/oauth.md.", (
        Option("enabled", "boolean", False, "the app answers OAuth clients (authorization server metadata, tokens)"),
        Option("dynamic_client_registration", "registration settings", {}, "who may register clients"),
        Option("grant", "grant settings", {}, "token lifetimes"),
    )),
    Section("dynamic_client_registration", ("apps[].oauth_configuration.dynamic_client_registration",), "Dynamic client registration (RFC 7591) for managed OAuth.", (
        Option("enabled", "boolean", True, "clients may register themselves"),
        Option("allow_any_on_localhost", "boolean", False, "any redirect URI on localhost may register"),
        Option("allow_any_on_loopback", "boolean", False, "any redirect URI on a loopback address may register"),
        Option("allowed_uris", "list of URIs", [], "redirect URIs that may register; http(s) ones may end in /*, custom schemes match exactly"),
    )),
    Section("grant", ("apps[].oauth_configuration.grant",), "Managed OAuth token lifetimes.", (
        Option("access_token_lifetime", "duration", "15m", "how long an access token works"),
        Option("session_duration", "duration", None, "how long refresh tokens work; unset: the app's session_duration"),
    )),
    Section("mfa_config", ("mfa_config", "apps[].mfa_config", "policies[].mfa_config", "apps[].policies[].mfa_config"),
            "Independent MFA (spec §14.5): the policy's settings win over the app's, the app's over the organisation's.", (
        Option("mfa_disabled", "boolean", False, "this app or policy opts out of the organisation's MFA (not at the top level)"),
        Option("allowed_authenticators", "list of totp, biometrics, security_key", ["totp", "biometrics", "security_key"], "the second factors offered"),
        Option("session_duration", "duration", None, "how long an MFA stays good; unset: the next level's, else 24h"),
    )),
    Section("rule", (_RULE_LISTS,), "One rule: a mapping with one key, the selector (spec §6.3). Identity rules are judged at sign-in, the others on every request.", (
        Option("any_valid_service_token", "non-identity rule: {}", None, "any valid service token (Service Auth policies only)"),
        Option("auth_method", "identity rule", None, "the identity's amr holds this method"),
        Option("email", "identity rule", None, "this address"),
        Option("email_domain", "identity rule", None, "an address in this domain"),
        Option("email_list", "identity rule", None, "an address in this email list"),
        Option("everyone", "non-identity rule: {}", None, "everyone"),
        Option("geo", "non-identity rule", None, "requests from this country"),
        Option("github-organization", "identity rule", None, "a member of this GitHub organisation"),
        Option("group", "rule (identity when the group has an identity rule)", None, "the Access group's rules"),
        Option("ip", "non-identity rule", None, "requests from this address or network"),
        Option("ip_list", "non-identity rule", None, "requests from an address in this IP list"),
        Option("login_method", "identity rule", None, "a sign-in through this identity provider"),
        Option("oidc", "identity rule", None, "an IdP claim with this value"),
        Option("service_token", "non-identity rule", None, "this service token (Service Auth policies only)"),
    )),
    Section("rule.email", ("<rule>.email",), "{email: {email: alice@acme.test}}", (
        Option("email", "email address", REQUIRED, "the address, compared case-insensitively"),
    )),
    Section("rule.email_domain", ("<rule>.email_domain",), "{email_domain: {domain: acme.test}}", (
        Option("domain", "domain", REQUIRED, "the domain after the @ (a leading @ is dropped)"),
    )),
    Section("rule.email_list", ("<rule>.email_list",), "{email_list: {id: contractors}}", (
        Option("id", "name in email_lists", REQUIRED, "the list"),
    )),
    Section("rule.everyone", ("<rule>.everyone",), "{everyone: {}}: no keys.", ()),
    Section("rule.any_valid_service_token", ("<rule>.any_valid_service_token",), "{any_valid_service_token: {}}: no keys.", ()),
    Section("rule.ip", ("<rule>.ip",), "{ip: {ip: 192.0.2.0/24}}", (
        Option("ip", "IP address or CIDR", REQUIRED, "the address or network"),
    )),
    Section("rule.ip_list", ("<rule>.ip_list",), "{ip_list: {id: office}}", (
        Option("id", "name in ip_lists", REQUIRED, "the list"),
    )),
    Section("rule.geo", ("<rule>.geo",), "{geo: {country_code: GB}}", (
        Option("country_code", "country code", REQUIRED, "the country (ISO 3166 alpha-2) of the request (CF-IPCountry)"),
    )),
    Section("rule.service_token", ("<rule>.service_token",), "{service_token: {token_id: ci-bot}}", (
        Option("token_id", "service token id or name", REQUIRED, "the token"),
    )),
    Section("rule.github-organization", ("<rule>.github-organization",), "{github-organization: {name: acme}}", (
        Option("name", "string", REQUIRED, "the organisation, compared case-insensitively with the persona's github_orgs"),
        Option("team", "string", None, "a team of the organisation",
               refused="personas have no GitHub teams, so the rule would admit the whole organisation; remove it, or match a persona group with an oidc rule on groups"),
        Option("identity_provider_id", "string", None, "only members who signed in through this identity provider (the persona's idp, as login_method matches it)"),
    )),
    Section("rule.oidc", ("<rule>.oidc",), "{oidc: {claim_name: groups, claim_value: admins}}", (
        Option("claim_name", "string", REQUIRED, "the claim: groups reads the persona's groups, any other name its custom claims"),
        Option("claim_value", "string", REQUIRED, "the value the claim equals (or, for a list, holds)"),
        Option("identity_provider_id", "string", None, "only claims of sign-ins through this identity provider (the persona's idp, as login_method matches it)"),
    )),
    Section("rule.login_method", ("<rule>.login_method",), "{login_method: {id: fakeedge}}", (
        Option("id", "string", REQUIRED, "the identity provider: the persona's idp"),
    )),
    Section("rule.auth_method", ("<rule>.auth_method",), "{auth_method: {auth_method: mfa}}", (
        Option("auth_method", "string", REQUIRED, "an RFC 8176 method the identity's amr must hold"),
    )),
    Section("rule.group", ("<rule>.group",), "{group: {id: admins}}", (
        Option("id", "group id or name", REQUIRED, "the Access group"),
    )),
    Section("ingress", ("ingress[]",), "A cloudflared ingress rule (spec §9.1): first match wins; the last one matches everything.", (
        Option("hostname", "host name, *.host or *suffix", None, "the Host it matches; unset: any"),
        Option("path", "regular expression", None, "searched in the request path, in Go/RE2 syntax as cloudflared; unset: any"),
        Option("service", "http(s)://host:port or http_status:<code>", REQUIRED, "the origin (no path), or a fixed status"),
        Option("originRequest", "origin request settings", {}, "cloudflared's per-rule origin settings"),
    )),
    Section("originRequest", ("ingress[].originRequest", "originRequest of an ingress_file"), "cloudflared's origin settings; those not emulated are accepted so that a real config.yml loads, and `fakeedge check`/`serve` list them.", (
        Option("access", "mapping", None, "cloudflared's own check of the Access JWT", honoured=False),
        Option("bastionMode", "boolean", None, "cloudflared as a jump host", honoured=False),
        Option("caPool", "path", None, "CA certificates for the origin's TLS", honoured=False),
        Option("connectTimeout", "duration", "30s", "how long connecting to the origin may take"),
        Option("disableChunkedEncoding", "boolean", None, "no chunked request bodies to the origin", honoured=False),
        Option("http2Origin", "boolean", None, "HTTP/2 to the origin", honoured=False),
        Option("httpHostHeader", "host[:port]", None, "the Host header sent to the origin instead of the request's"),
        Option("ipRules", "list", None, "origin addresses the proxy modes may reach", honoured=False),
        Option("keepAliveConnections", "number", None, "idle origin connections kept", honoured=False),
        Option("keepAliveTimeout", "duration", None, "how long an idle origin connection is kept", honoured=False),
        Option("matchSNItoHost", "boolean", None, "the request's Host as the TLS SNI to the origin", honoured=False),
        Option("noHappyEyeballs", "boolean", None, "no IPv4 fallback when IPv6 fails", honoured=False),
        Option("noTLSVerify", "boolean", None, "skip the origin certificate check", honoured=False),
        Option("originServerName", "string", None, "the name the origin certificate must have", honoured=False),
        Option("proxyAddress", "string", None, "the address of cloudflared's own proxy listener", honoured=False),
        Option("proxyPort", "number", None, "the port of cloudflared's own proxy listener", honoured=False),
        Option("proxyType", "string", None, "the kind of cloudflared's own proxy listener (socks)", honoured=False),
        Option("tcpKeepAlive", "duration", None, "TCP keep-alive interval to the origin", honoured=False),
        Option("tlsTimeout", "duration", None, "TLS handshake timeout with the origin", honoured=False),
    )),
)
# fmt: on

_BY_ID = {s.id: s for s in SECTIONS}


def section(section_id: str) -> Section:
    """The section declared as ``section_id``.

    Raises:
        KeyError: no such section.
    """
    return _BY_ID[section_id]


def keys(section_id: str) -> tuple[str, ...]:
    """The keys a mapping of the section may hold, in declaration order (the order errors list them)."""
    return tuple(o.key for o in _BY_ID[section_id].options)


def option(section_id: str, key: str) -> Option:
    """One declared key.

    Raises:
        KeyError: the section does not declare ``key``.
    """
    found = next((o for o in _BY_ID[section_id].options if o.key == key), None)
    if found is None:
        raise KeyError(f"{section_id}.{key}")
    return found


def _shown(value: Any) -> str:
    if value is REQUIRED:
        return "**required**"
    if value is None:
        return "—"
    if isinstance(value, Derived):
        return str(value)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | dict) and not value:
        return "`[]`" if isinstance(value, list) else "`{}`"
    if isinstance(value, list):
        return "`[" + ", ".join(value) + "]`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def reference() -> str:
    """``docs/config-reference.md``: every section and key, generated from :data:`SECTIONS`."""
    lines = [
        "# Config reference",
        "",
        "<!-- generated by `python -m fakeedge.options > docs/config-reference.md`; do not edit -->",
        "",
        "Every key a fakeedge config (`fakeedge.yml`) accepts. Any other key is an error naming the file",
        'and the key path, with the nearest valid key ("did you mean"). Durations are Go durations',
        "(`30s`, `15m`, `24h`, `2h45m`) or seconds as a number; times are RFC 3339. Where a default is",
        "described in words, it is derived as the words say. The README's \"Use it in front of your",
        'services" shows a whole config.',
        "",
        *(f"- [{_title(s)}](#{_anchor(s)})" for s in SECTIONS),
        "",
    ]
    for s in SECTIONS:
        lines += [f"## {_title(s)}", "", s.about, ""]
        if not s.options:
            continue
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for o in s.options:
            meaning = o.help
            if not o.honoured:
                meaning += " (cloudflared's; accepted, not emulated: `fakeedge check` lists it)"
            if o.refused is not None:
                meaning += f". **Not supported yet, refused:** {o.refused}"
            lines.append(f"| `{o.key}` | {_cell(o.type)} | {_cell(_shown(o.default))} | {_cell(meaning)} |")
        lines.append("")
    return "\n".join(lines)


def _title(s: Section) -> str:
    return "top level" if s.where == ("",) else ", ".join(f"`{w}`" if " " not in w else w for w in s.where)


def _anchor(s: Section) -> str:
    # GitHub's heading anchors: lower-case, spaces to '-', punctuation other than '-' and '_' dropped
    text = _title(s).lower().replace(" ", "-")
    return "".join(c for c in text if c.isalnum() or c in "-_")


if __name__ == "__main__":
    sys.stdout.write(reference())
