"""Pure decision tables: which app covers a request, what the policies decide, which ingress rule routes.

``policy`` and ``config`` must not pull in aiohttp: they are the I/O-free core.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from typing import Any

import pytest

from fakeedge.config import parse_config
from fakeedge.policy import AppIndex, Facts, Identity, IngressIndex, decide, normalize_path

ORIGIN = "http://127.0.0.1:9"


def _apps(*domains: str | list[str]) -> AppIndex:
    apps = [
        {"name": f"app{i}", "destinations": d if isinstance(d, list) else [d], "policies": []}
        for i, d in enumerate(domains)
    ]
    config = parse_config({"team": "t", "apps": apps}, source="t.yml")
    return AppIndex(config.apps)


INDEX = _apps(
    "a.test",  # app0
    "*.a.test",  # app1
    "*test.b.test",  # app2
    "c.test/alpha/*",  # app3
    "c.test/beta",  # app4
    "d.test/foo*/bar",  # app5
    "e.test",  # app6
    "e.test/admin",  # app7
    "e.test/admin/exec",  # app8
    "x.f.test",  # app9
    "*.f.test",  # app10
    ["g.test", "h.test/api"],  # app11
    "i.test/*",  # app12
)

# (host, path, expected app or None)
MATCHES = [
    ("a.test", "/", "app0"),
    ("A.TEST", "/", None),  # the caller lower-cases; the index is lower-case
    ("a.test", "/anything/deep", "app0"),
    ("x.a.test", "/", "app1"),
    ("www.a.test", "/p", "app1"),
    ("x.y.a.test", "/", None),  # spec §7.2: one label only
    ("test.b.test", "/", "app2"),  # partial wildcard matches the bare suffix
    ("alphatest.b.test", "/", "app2"),
    ("alpha.test.b.test", "/", None),
    ("alphatestx.b.test", "/", None),
    ("c.test", "/alpha/one", "app3"),
    ("c.test", "/alpha/", "app3"),
    ("c.test", "/alpha", None),  # spec §7.2: host/alpha/* does not cover /alpha
    ("c.test", "/alphabet", None),
    ("c.test", "/beta", "app4"),
    ("c.test", "/beta/x/y", "app4"),
    ("c.test", "/betamax", None),
    ("c.test", "/", None),
    ("d.test", "/food/stuff/bar", "app5"),  # a mid-path wildcard spans segments
    ("d.test", "/foo/bar", "app5"),
    ("d.test", "/foo/baz", None),
    ("e.test", "/", "app6"),
    ("e.test", "/admin", "app7"),  # most specific wins
    ("e.test", "/admin/users", "app7"),
    ("e.test", "/admin/exec", "app8"),
    ("e.test", "/admin/exec/q3", "app8"),
    ("e.test", "/administrator", "app6"),
    ("x.f.test", "/", "app9"),  # exact beats wildcard
    ("y.f.test", "/", "app10"),
    ("g.test", "/", "app11"),
    ("h.test", "/api/v1", "app11"),
    ("h.test", "/web", None),
    ("i.test", "/", "app12"),
    ("i.test", "/x", "app12"),
    ("zzz.test", "/", None),
]


@pytest.mark.parametrize(("host", "path", "expected"), MATCHES, ids=[f"{h}{p}" for h, p, _ in MATCHES])
def test_app_matching(host: str, path: str, expected: str | None) -> None:
    match = INDEX.match(host, path)
    assert (match.app.name if match else None) == expected


# (raw request path, as Cloudflare normalises it before Access matches: spec §14.1)
NORMALISED = [
    ("/", "/"),
    ("", "/"),
    ("/hello/world", "/hello/world"),
    ("/%68ello//pa\\th", "/hello/pa/th"),  # the example in Cloudflare's URL normalisation docs
    ("/public\\../private", "/private"),
    ("/public/..\\", "/"),
    ("/public\\../admin/x", "/admin/x"),
    ("/public%2fsecret", "/public%2Fsecret"),  # %2F is data, never a separator
    ("/a%2F..%2Fb", "/a%2F..%2Fb"),
    ("/a/..%2f", "/a/..%2F"),
    ("/%5c..%5cx", "/%5C..%5Cx"),  # only a literal backslash turns into "/"
    ("/x/%2e%2e/y", "/y"),  # unreserved escapes are decoded before dot segments go
    ("/x/.%2E/y", "/y"),
    ("/x/%2e/y", "/x/y"),
    ("/a/b/..", "/a/"),  # RFC 3986 §5.2.4 keeps the trailing slash
    ("/a/./b/.", "/a/b/"),
    ("/a/b/", "/a/b/"),
    ("/../../etc", "/etc"),  # never above the root
    ("/..", "/"),
    ("/.", "/"),
    ("//x///y", "/x/y"),
    ("/a//../b", "/b"),  # slashes merged first, as nginx does
    ("/a/...", "/a/..."),  # three dots are a name
    ("/.well-known/x", "/.well-known/x"),
    ("/%7e%41%5a%30%2D%5F", "/~AZ0-_"),
    ("/%3a%3F%23", "/%3A%3F%23"),  # escapes of reserved characters upper-cased, kept
    ("/%252e%252e/", "/%252e%252e/"),  # decoded once, never twice
    ("/x%zz", "/x%25zz"),  # a "%" that starts no escape is one
    ("/x%4", "/x%254"),
    ("/x%", "/x%25"),
    ('/a b"<>^`{|}', "/a%20b%22%3C%3E%5E%60%7B%7C%7D"),
    ("/x\x00\x0d\x1f\x7f", "/x%00%0D%1F%7F"),
    ("/caf\u00e9", "/caf%C3%A9"),
    ("/x\udc80", "/x%80"),  # a raw byte the parser passed through as a surrogate escape
    ("/:@!$&'()*+,;=", "/:@!$&'()*+,;="),  # reserved characters are left alone
    ("/x%22,%20resource_metadata=%22https://e.test/m", "/x%22,%20resource_metadata=%22https:/e.test/m"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALISED, ids=[repr(r) for r, _ in NORMALISED])
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected
    assert normalize_path(expected) == expected  # idempotent: what Access judged is stable


BYPASS_INDEX = _apps("admin.acme.test", "admin.acme.test/public/*", "docs.acme.test/caf\u00e9/*", "x.test/a%2fb")

# (raw path, app judging it): the issue 9 reproductions, and config paths normalised like requests
NORMALISED_MATCHES = [
    ("/public/page", "app1"),
    ("/public\\../private", "app0"),
    ("/public/..\\", "app0"),
    ("/public\\../admin/x", "app0"),
    ("/public%2fsecret", "app0"),  # not /public/secret: the Bypass app does not cover it
    ("/public%2Fsecret/x", "app0"),
    ("/%70ublic/x", "app1"),  # %70 is "p", an unreserved character
    ("/public/%2e%2e/admin", "app0"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALISED_MATCHES, ids=[r for r, _ in NORMALISED_MATCHES])
def test_apps_are_matched_on_the_normalised_path(raw: str, expected: str) -> None:
    match = BYPASS_INDEX.match("admin.acme.test", normalize_path(raw))
    assert match is not None
    assert match.app.name == expected


def test_config_paths_are_normalised_like_request_paths() -> None:
    for raw in ("/caf%C3%A9/menu", "/caf%c3%a9/menu", "/caf\u00e9/menu"):
        match = BYPASS_INDEX.match("docs.acme.test", normalize_path(raw))
        assert match is not None, raw
        assert match.app.name == "app2"
    assert BYPASS_INDEX.match("x.test", normalize_path("/a%2Fb")) is not None
    assert BYPASS_INDEX.match("x.test", normalize_path("/a/b")) is None


def test_more_specific_apps_report_the_broader_losers() -> None:
    match = INDEX.match("e.test", "/admin/exec/1")
    assert match is not None
    assert match.app.name == "app8"
    assert [str(d) for d in match.losers] == ["e.test/admin", "e.test"]


def test_exact_host_lookups_do_not_scan_every_app() -> None:
    many = _apps(*[f"app{i}.big.test" for i in range(1000)])
    assert len(many._exact) == 1000 and not many._wild
    match = many.match("app999.big.test", "/")
    assert match is not None and match.app.name == "app999"


def _config(policies: list[dict[str, Any]], **top: Any) -> Any:
    raw = {
        "team": "t",
        "service_tokens": [
            {"name": "bot", "client_id": "bot.access", "client_secret": "s"},
            {"name": "other", "client_id": "other.access", "client_secret": "s"},
        ],
        "groups": [
            {"name": "admins", "include": [{"oidc": {"claim_name": "groups", "claim_value": "admins"}}]},
            {"name": "office", "id": "g-office", "include": [{"ip": {"ip": "10.0.0.0/8"}}]},
        ],
        "email_lists": {"vips": ["ceo@a.test", "cfo@a.test"]},
        "ip_lists": {"vpn": ["192.0.2.0/24", "2001:db8::/32"]},
        "apps": [{"name": "A", "domain": "a.test", "policies": policies}],
        **top,
    }
    return parse_config(raw, source="t.yml").apps[0]


def _who(email: str = "alice@a.test", **kw: Any) -> Identity:
    return Identity(email=email, **kw)


HOME = ipaddress.ip_address("127.0.0.1")
OFFICE = ipaddress.ip_address("10.1.2.3")
VPN6 = ipaddress.ip_address("2001:db8::1")

ALLOW_DOMAIN = {"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "a.test"}}]}
BLOCK_BOB = {"name": "no-bob", "decision": "deny", "include": [{"email": {"email": "bob@a.test"}}]}
BOTS = {"name": "bots", "decision": "non_identity", "include": [{"service_token": {"token_id": "bot"}}]}
ANY_BOT = {"name": "any", "decision": "non_identity", "include": [{"any_valid_service_token": {}}]}
BYPASS_OFFICE = {"name": "office", "decision": "bypass", "include": [{"ip": {"ip": "10.0.0.0/8"}}]}

# (id, policies, facts, identity, expected outcome, expected policy)
DECISIONS: list[tuple[str, list[dict[str, Any]], Facts, Identity | None, str, str | None]] = [
    ("no-policies-deny", [], Facts(HOME, "US"), _who(), "deny", None),
    ("no-policies-no-login", [], Facts(HOME, "US"), None, "forbidden", None),
    ("allow-login-needed", [ALLOW_DOMAIN], Facts(HOME, "US"), None, "login", "staff"),
    ("allow-identity", [ALLOW_DOMAIN], Facts(HOME, "US"), _who(), "allow", "staff"),
    ("allow-other-domain", [ALLOW_DOMAIN], Facts(HOME, "US"), _who("x@b.test"), "deny", None),
    ("block-before-allow", [BLOCK_BOB, ALLOW_DOMAIN], Facts(HOME, "US"), _who("bob@a.test"), "deny", "no-bob"),
    ("allow-before-block", [ALLOW_DOMAIN, BLOCK_BOB], Facts(HOME, "US"), _who("bob@a.test"), "allow", "staff"),
    # spec §6.4: Bypass and Service Auth run first wherever they are listed
    ("service-first", [ALLOW_DOMAIN, BOTS], Facts(HOME, "US", "bot.access"), None, "service", "bots"),
    ("service-wrong-token", [ALLOW_DOMAIN, BOTS], Facts(HOME, "US", "other.access"), None, "login", "staff"),
    ("any-token", [ANY_BOT], Facts(HOME, "US", "other.access"), None, "service", "any"),
    ("service-only-no-token", [BOTS], Facts(HOME, "US"), None, "forbidden", None),
    ("bypass-first", [BLOCK_BOB, BYPASS_OFFICE], Facts(OFFICE, "US"), _who("bob@a.test"), "bypass", "office"),
    ("bypass-elsewhere", [BYPASS_OFFICE, ALLOW_DOMAIN], Facts(HOME, "US"), None, "login", "staff"),
    (
        "require-and",
        [
            {
                "name": "p",
                "decision": "allow",
                "include": [{"everyone": {}}],
                "require": [{"email_domain": {"domain": "a.test"}}, {"geo": {"country_code": "GB"}}],
            }
        ],
        Facts(HOME, "US"),
        _who(),
        "deny",
        None,
    ),
    (
        "require-all-met",
        [
            {
                "name": "p",
                "decision": "allow",
                "include": [{"everyone": {}}],
                "require": [{"email_domain": {"domain": "a.test"}}, {"geo": {"country_code": "GB"}}],
            }
        ],
        Facts(HOME, "GB"),
        _who(),
        "allow",
        "p",
    ),
    (
        "exclude-not",
        [
            {
                "name": "p",
                "decision": "allow",
                "include": [{"email_domain": {"domain": "a.test"}}],
                "exclude": [{"email": {"email": "alice@a.test"}}],
            }
        ],
        Facts(HOME, "US"),
        _who(),
        "deny",
        None,
    ),
    (
        "ip-precheck-refuses-before-login",
        [
            {
                "name": "p",
                "decision": "allow",
                "include": [{"email_domain": {"domain": "a.test"}}],
                "require": [{"ip": {"ip": "10.0.0.0/8"}}],
            }
        ],
        Facts(HOME, "US"),
        None,
        "forbidden",
        None,
    ),
    (
        "ip-precheck-passes",
        [
            {
                "name": "p",
                "decision": "allow",
                "include": [{"email_domain": {"domain": "a.test"}}],
                "require": [{"ip": {"ip": "10.0.0.0/8"}}],
            }
        ],
        Facts(OFFICE, "US"),
        None,
        "login",
        "p",
    ),
    (
        "session-from-excluded-ip",
        [
            {
                "name": "p",
                "decision": "allow",
                "include": [{"email_domain": {"domain": "a.test"}}],
                "exclude": [{"ip": {"ip": "10.0.0.0/8"}}],
            }
        ],
        Facts(OFFICE, "US"),
        _who(),
        "deny",
        None,
    ),
    (
        "deny-on-country-before-login",
        [{"name": "geo", "decision": "deny", "include": [{"geo": {"country_code": "KP"}}]}, ALLOW_DOMAIN],
        Facts(HOME, "KP"),
        None,
        "forbidden",
        "geo",
    ),
    (
        "email-list",
        [{"name": "v", "decision": "allow", "include": [{"email_list": {"id": "vips"}}]}],
        Facts(HOME, "US"),
        _who("CEO@a.test"),
        "allow",
        "v",
    ),
    (
        "email-list-miss",
        [{"name": "v", "decision": "allow", "include": [{"email_list": {"id": "vips"}}]}],
        Facts(HOME, "US"),
        _who(),
        "deny",
        None,
    ),
    (
        "ip-list-v6",
        [{"name": "v", "decision": "bypass", "include": [{"ip_list": {"id": "vpn"}}]}],
        Facts(VPN6, "US"),
        None,
        "bypass",
        "v",
    ),
    (
        "github-org",
        [{"name": "gh", "decision": "allow", "include": [{"github-organization": {"name": "Acme"}}]}],
        Facts(HOME, "US"),
        _who("x@gh.test", github_orgs=("acme",)),
        "allow",
        "gh",
    ),
    (
        "github-org-through-its-idp",
        [
            {
                "name": "gh",
                "decision": "allow",
                "include": [{"github-organization": {"name": "acme", "identity_provider_id": "github"}}],
            }
        ],
        Facts(HOME, "US"),
        _who("x@gh.test", github_orgs=("acme",), idp="github"),
        "allow",
        "gh",
    ),
    (
        "github-org-through-another-idp",  # issue 17: identity_provider_id was parsed and ignored
        [
            {
                "name": "gh",
                "decision": "allow",
                "include": [{"github-organization": {"name": "acme", "identity_provider_id": "github"}}],
            }
        ],
        Facts(HOME, "US"),
        _who("x@gh.test", github_orgs=("acme",)),
        "deny",
        None,
    ),
    (
        "oidc-claim-through-another-idp",
        [
            {
                "name": "o",
                "decision": "allow",
                "include": [
                    {"oidc": {"claim_name": "groups", "claim_value": "admins", "identity_provider_id": "okta"}}
                ],
            }
        ],
        Facts(HOME, "US"),
        _who(groups=("admins",), idp="onetimepin"),
        "deny",
        None,
    ),
    (
        "oidc-claim-through-its-idp",
        [
            {
                "name": "o",
                "decision": "allow",
                "include": [
                    {"oidc": {"claim_name": "groups", "claim_value": "admins", "identity_provider_id": "okta"}}
                ],
            }
        ],
        Facts(HOME, "US"),
        _who(groups=("admins",), idp="okta"),
        "allow",
        "o",
    ),
    (
        "oidc-groups",
        [{"name": "o", "decision": "allow", "include": [{"oidc": {"claim_name": "groups", "claim_value": "admins"}}]}],
        Facts(HOME, "US"),
        _who(groups=("admins",)),
        "allow",
        "o",
    ),
    (
        "group-by-name",
        [{"name": "g", "decision": "allow", "include": [{"group": {"id": "admins"}}]}],
        Facts(HOME, "US"),
        _who(groups=("admins",)),
        "allow",
        "g",
    ),
    (
        "group-by-id-non-identity",
        [{"name": "g", "decision": "bypass", "include": [{"group": {"id": "g-office"}}]}],
        Facts(OFFICE, "US"),
        None,
        "bypass",
        "g",
    ),
    (
        "auth-method-mfa",
        [{"name": "m", "decision": "allow", "include": [{"auth_method": {"auth_method": "mfa"}}]}],
        Facts(HOME, "US"),
        _who(amr=("pwd", "mfa")),
        "allow",
        "m",
    ),
    (
        "auth-method-missing",
        [{"name": "m", "decision": "allow", "include": [{"auth_method": {"auth_method": "mfa"}}]}],
        Facts(HOME, "US"),
        _who(),
        "deny",
        None,
    ),
    (
        "login-method",
        [{"name": "l", "decision": "allow", "include": [{"login_method": {"id": "onetimepin"}}]}],
        Facts(HOME, "US"),
        _who(idp="onetimepin"),
        "allow",
        "l",
    ),
    (
        "everyone",
        [{"name": "e", "decision": "allow", "include": [{"everyone": {}}]}],
        Facts(HOME, "US"),
        None,
        "login",
        "e",
    ),
]


@pytest.mark.parametrize(
    ("policies", "facts", "who", "outcome", "policy"), [d[1:] for d in DECISIONS], ids=[d[0] for d in DECISIONS]
)
def test_policy_decisions(
    policies: list[dict[str, Any]], facts: Facts, who: Identity | None, outcome: str, policy: str | None
) -> None:
    verdict = decide(_config(policies), facts, who)
    assert verdict.outcome == outcome
    assert (verdict.policy.name if verdict.policy else None) == policy


def _ingress(rules: list[dict[str, Any]]) -> Any:
    return parse_config({"team": "t", "ingress": rules}, source="t.yml").ingress


INGRESS = _ingress(
    [
        {"hostname": "static.a.test", "path": r"\.(jpg|png|css|js)$", "service": "http://127.0.0.1:1"},
        {"hostname": "*.a.test", "service": "http://127.0.0.1:2"},
        {"hostname": "a.test", "path": "api", "service": "http://127.0.0.1:3"},
        {"service": "http_status:404"},
    ]
)


@pytest.mark.parametrize(
    ("host", "path", "index"),
    [
        ("static.a.test", "/img/x.png", 0),
        ("static.a.test", "/index.html", 1),  # falls through to the wildcard
        ("x.y.z.a.test", "/", 1),  # cloudflared wildcards match any depth, unlike Access (spec §9.1)
        ("a.test", "/v1/api/x", 2),  # path is an unanchored regex
        ("a.test", "/", 3),
        ("other.test", "/", 3),
    ],
)
def test_ingress_matching(host: str, path: str, index: int) -> None:
    assert IngressIndex(INGRESS).route(host, path)[0] == index


def test_ingress_order_is_kept_across_exact_and_wildcard_rules() -> None:
    rules = _ingress(
        [
            {"hostname": "*.a.test", "path": "^/api", "service": "http://127.0.0.1:1"},
            {"hostname": "x.a.test", "service": "http://127.0.0.1:2"},
            {"hostname": "*.a.test", "service": "http://127.0.0.1:3"},
            {"hostname": "x.a.test", "path": "never-reached", "service": "http://127.0.0.1:4"},
            {"service": "http_status:404"},
        ]
    )
    index = IngressIndex(rules)
    assert index.route("x.a.test", "/api/v1")[0] == 0
    assert index.route("x.a.test", "/web")[0] == 1
    assert index.route("y.a.test", "/web")[0] == 2
    assert index.route("b.test", "/")[0] == 4
    many = IngressIndex(
        _ingress(
            [{"hostname": f"h{i}.test", "service": "http://127.0.0.1:1"} for i in range(1000)]
            + [{"service": "http_status:404"}]
        )
    )
    assert many._other == [1000]  # a lookup tries the host's own rules and the catch-all, not 1,000
    assert many.route("h999.test", "/")[0] == 999


@pytest.mark.parametrize(
    "module",
    [
        "fakeedge.options",
        "fakeedge.config",
        "fakeedge.policy",
        "fakeedge.claims",
        "fakeedge.explain",
        "fakeedge.config_audit",
    ],
)
def test_pure_modules_do_not_load_aiohttp(module: str) -> None:
    code = (
        f"import sys, {module}; assert 'aiohttp' not in sys.modules, sorted(m for m in sys.modules if 'aiohttp' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
