"""Algorithmic complexity: what a hostile request or config can make the edge compute.

Each parser a request, the control API or a config reaches is fed inputs of the worst shape at
growing sizes and must answer correctly (the right value or a clear refusal). The edge runs on its
own thread (``fakeedge.testing_sync``) and is spoken to over raw sockets, so a request that holds
its event loop shows up as a socket timeout. Every bound is a join or a timeout generous enough for
a loaded two-core machine (``BOUND`` where linear work takes milliseconds); nothing else is timed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakeedge.policy import AppIndex, _path_matcher, normalize_path
from fakeedge.testing_sync import SyncEdge, start_edge

from .conftest import base_config
from .raw_http import Answer, parse_head

BOUND = 10.0  # seconds; the linear versions take milliseconds, the holes found took 40 s and more
EXAMPLES = int(os.environ.get("FAKEEDGE_HYPOTHESIS_EXAMPLES", "300"))
T = TypeVar("T")


def within(work: Callable[[], T], bound: float = BOUND) -> T:
    """``work()``'s result, asserting it came within ``bound`` seconds (joined, not timed otherwise).

    A regular expression holds the GIL for its whole match, so the join alone could return late
    and find the worker done: the worker notes when it finished, and that is what is compared.
    """
    done: list[tuple[float, T]] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:  # handed to the test's thread
            failed.append(exc)
        else:
            done.append((time.monotonic(), result))

    deadline = time.monotonic() + bound
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(bound)
    if failed:
        raise failed[0]
    assert done and done[0][0] <= deadline, f"no answer within {bound:g} s"
    return done[0][1]


# --- raw HTTP against an edge on its own thread --------------------------------------------------


def exchange(port: int, request: bytes, bound: float = BOUND) -> Answer:
    """Send ``request`` byte for byte and read one answer; fail if it is not complete within ``bound``."""
    deadline = time.monotonic() + bound
    with socket.create_connection(("127.0.0.1", port), timeout=bound) as sock:
        sock.sendall(request)
        data = b""
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer within {bound:g} s") from None
            if not chunk:
                break
            data += chunk
    # the edge's thread may hold the GIL through a whole regex match, and this thread then only
    # gets to recv() after the answer is there: the clock, read once it is, says if it was late
    assert time.monotonic() <= deadline, f"no answer within {bound:g} s"
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"the edge closed the connection without an answer: {data[:200]!r}"
    return Answer(*parse_head(head), body)


def request(method: str, target: str, host: str, port: int, headers: str = "", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body or method == "POST" else ""
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}{length}Connection: close\r\n\r\n"
    return head.encode() + body


@pytest.fixture
def threaded_edge(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], SyncEdge]]:
    started: list[SyncEdge] = []

    def go(cfg: dict[str, Any]) -> SyncEdge:
        cfg.setdefault("keys_dir", str(tmp_path / "keys"))
        edge = start_edge(cfg, record=False)
        started.append(edge)
        return edge

    yield go
    for edge in reversed(started):
        edge.close()


ORIGIN = "http_status:200"  # the origin's answer is not the point: the edge's work before it is


# --- app paths with wildcards (spec §7.2) ---------------------------------------------------------

# "At most one * between dots and one between slashes" (spec §7.2): several segments may each have one
GLOB_APPS = [
    ("Deep", "deep.acme.test/a*/b*/c*/d"),
    ("Prefixes", "deep.acme.test/x*/y*/z*"),
]


def _glob_config() -> dict[str, Any]:
    cfg = base_config(ORIGIN)
    staff = [{"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]}]
    cfg["apps"] += [{"name": name, "domain": domain, "policies": staff} for name, domain in GLOB_APPS]
    cfg["ingress"][:0] = [{"hostname": "deep.acme.test", "service": ORIGIN}]
    return cfg


# the worst shapes: every wildcard has a choice at every repetition, and the last literal never comes
GLOB_PATHS = {
    "abc": lambda n: "/a" + "/b/c" * (n // 4),
    "xyz": lambda n: "/x" + "/y" * (n // 2),
    "slashes": lambda n: "/a" + "/b" * (n // 2),
}


@pytest.mark.parametrize("size", [1000, 10_000, 100_000, 1_000_000])
@pytest.mark.parametrize("shape", GLOB_PATHS)
def test_wildcard_app_paths_are_matched_in_linear_time(shape: str, size: int) -> None:
    """``/a*/b*/c*/d`` compiled to ``/a.*/b.*/c.*/d``: 8,000 characters of ``/b/c`` took 44 s."""
    from fakeedge.config import parse_config

    config = parse_config(_glob_config(), source="test.yml")
    index = AppIndex(config.apps)
    path = GLOB_PATHS[shape](size)
    match = within(lambda: index.match("deep.acme.test", normalize_path(path)))
    assert match is None  # no app covers it: the last literal never comes
    # and the matcher still matches what it should, at the same sizes
    covered = within(lambda: index.match("deep.acme.test", "/a" + "/b/c" * (size // 4) + "/d/e"))
    assert covered is not None and covered.app.name == "Deep"
    covered = within(lambda: index.match("deep.acme.test", "/x" + "/y" * (size // 2) + "/z"))
    assert covered is not None and covered.app.name == "Prefixes"


@pytest.mark.parametrize(
    ("pattern", "path", "covered"),
    [
        ("/a*/b*/c*/d", "/a/b/c/d", True),
        ("/a*/b*/c*/d", "/aa/bb/cc/d/e", True),
        ("/a*/b*/c*/d", "/a/c/b/c/d", True),
        ("/a*/b*/c*/d", "/a/b/c/d2", False),
        ("/a*/b*/c*/d", "/a/b/c/", False),
        ("/a*/b*/c*/d", "/a/b/d", False),
        ("/a*/b", "/a/b/c/b", True),
        ("/foo*/bar", "/food/stuff/bar", True),  # spec §7.2: a mid-path wildcard spans segments
        ("/foo*/bar", "/food/stuff/barn", False),
        ("/alpha/*", "/alpha", False),
        ("/alpha/*", "/alpha/one", True),
        ("/ab*ba", "/aba", False),  # the literals may not overlap
        ("/ab*ba", "/abba", True),
    ],
)
def test_wildcard_app_paths_still_mean_what_they_meant(pattern: str, path: str, covered: bool) -> None:
    from fakeedge.config import parse_config

    cfg = base_config(ORIGIN)
    cfg["apps"] = [{**cfg["apps"][0], "domain": "admin.acme.test" + pattern}]
    index = AppIndex(parse_config(cfg, source="test.yml").apps)
    assert (index.match("admin.acme.test", path) is not None) is covered


def _backtracking_matcher(pattern: str) -> re.Pattern[str]:
    """The matcher as it was before: every ``*`` a ``.*``, exponent and all. The oracle on short paths."""
    pattern = normalize_path(pattern)
    body = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.compile(body + ("" if pattern.endswith("*") else r"(?:/.*)?") + r"\Z", re.S)


@st.composite
def _glob_and_path(draw: st.DrawFn) -> tuple[str, str]:
    segment = st.text("ab/", max_size=3)
    parts = draw(st.lists(segment, min_size=1, max_size=5))
    pattern = "/" + "*".join(parts)
    path = "/" + draw(st.text("ab/", max_size=14))
    return pattern, path


@given(_glob_and_path())
@settings(max_examples=EXAMPLES, deadline=None)
def test_wildcard_matching_agrees_with_the_backtracking_matcher(case: tuple[str, str]) -> None:
    """Oracle: on short paths the old ``.*`` matcher is slow but right; the new one must agree."""
    pattern, path = case
    matcher = _path_matcher(pattern)
    assert matcher is not None
    assert (matcher.match(path) is not None) == (_backtracking_matcher(pattern).match(path) is not None)


def test_a_long_path_against_wildcard_apps_gets_its_302_from_a_real_edge(
    threaded_edge: Callable[[dict[str, Any]], SyncEdge],
) -> None:
    """The longest target aiohttp reads (8,190 bytes on the request line) of the worst shape."""
    edge = threaded_edge(_glob_config())
    target = "/a" + "/b/c" * 2040
    answer = exchange(edge.port, request("GET", target, "deep.acme.test", edge.port))
    assert answer.status == 200  # no Access app covers it: the origin answers
    covered = exchange(edge.port, request("GET", target + "/d", "deep.acme.test", edge.port))
    assert covered.status == 302
    assert urlsplit(covered.header("Location")[0]).path.startswith("/cdn-cgi/access/login/deep.acme.test")


# --- the sign-in form ---------------------------------------------------------------------------


def _login_post(edge: SyncEdge, fields: dict[str, str]) -> Answer:
    first = exchange(edge.port, request("GET", "/", "admin.acme.test", edge.port))
    assert first.status == 302
    login = urlsplit(first.header("Location")[0])
    body = "&".join(f"{k}={quote(v, safe='')}" for k, v in {"csrf": "c" * 32, **fields}.items()).encode()
    headers = f"Cookie: CF_Session={'c' * 32}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    return exchange(
        edge.port, request("POST", f"{login.path}?{login.query}", login.netloc.split(":")[0], edge.port, headers, body)
    )


EMAIL_SHAPES = {
    "dots": lambda n: "a@" + "." * n + "<",
    "dotted": lambda n: "a@" + "a." * (n // 2) + "<",
    "ats": lambda n: "a" * n + "@",
}


@pytest.mark.parametrize("size", [1000, 10_000, 60_000])
@pytest.mark.parametrize("shape", EMAIL_SHAPES)
def test_a_long_email_on_the_sign_in_form_is_refused_in_linear_time(
    threaded_edge: Callable[[dict[str, Any]], SyncEdge], shape: str, size: int
) -> None:
    """``a@`` and 60,000 dots (the form may be 64 KiB) took about a minute in the email regex."""
    edge = threaded_edge(base_config(ORIGIN))
    answer = _login_post(edge, {"email": EMAIL_SHAPES[shape](size)})
    assert answer.status == 400
    assert b"Enter an email address such as you@example.com." in answer.body


# --- parsers found linear, kept so: each answers the worst shapes at 1k..1M characters ------------

SIZES = [1000, 10_000, 100_000, 1_000_000]


@pytest.mark.parametrize("size", SIZES)
def test_paths_hosts_and_redirect_targets_are_read_in_linear_time(size: int) -> None:
    from fakeedge.config import parse_destination
    from fakeedge.policy import split_host
    from fakeedge.web_login import safe_redirect_path

    assert within(lambda: normalize_path("/%2e%2e/" * (size // 8))) == "/"
    assert within(lambda: normalize_path("/a/.." * (size // 5))) == "/"
    assert within(lambda: normalize_path("\\" * size)) == "/"
    assert within(lambda: normalize_path("%" * size)) == "/" + "%25" * size
    assert within(lambda: split_host("a." * (size // 2) + "!")) is None
    assert within(lambda: split_host(("a" + "-" * 61 + "a.") * (size // 64) + "-")) is None
    assert within(lambda: split_host("a:" + "1" * size)) is None
    assert within(lambda: split_host("[" + ":" * size)) is None
    assert within(lambda: safe_redirect_path("/" + "é" * size)) == "/" + "%C3%A9" * size
    with pytest.raises(ValueError, match="expected host"):
        within(lambda: parse_destination("a" * size + "!/x"))


@pytest.mark.parametrize("size", SIZES)
def test_what_the_journal_masks_is_masked_in_linear_time(size: int) -> None:
    from fakeedge.record import mask_header, mask_url

    secret = '{"cf-access-client-id":"x","cf-access-client-secret":"' + "\\" * size + "!"  # never closed
    assert within(lambda: mask_header("X-Token", secret)) == secret
    dotted = "a." * (size // 2)
    assert within(lambda: mask_header("Authorization", "Bearer " + dotted)).startswith("Bearer <masked")
    cookies = "; ".join(["a=b"] * (size // 5))
    assert within(lambda: mask_header("Cookie", cookies)).count("<masked 1 chars") == size // 5
    assert within(lambda: mask_url("/?" + "a=1&" * (size // 4))).startswith("/?a=1&")


@pytest.mark.parametrize("size", SIZES)
def test_registration_redirect_uris_are_judged_in_linear_time(size: int) -> None:
    from fakeedge.config import DynamicClientRegistration
    from fakeedge.oauth import redirect_uri_refusal

    dcr = DynamicClientRegistration(allowed_uris=("https://app.test/*",))
    assert within(lambda: redirect_uri_refusal("https://app.test/" + "a/" * (size + 1024), dcr)) == "is not a valid URI"
    assert within(lambda: redirect_uri_refusal("https://app.test/" + "a/" * 1000, dcr)) is None


# --- through a real edge: bodies and headers beyond what aiohttp's line limits bound --------------


def _oauth_edge(threaded_edge: Callable[[dict[str, Any]], SyncEdge]) -> SyncEdge:
    cfg = base_config(ORIGIN)
    cfg["apps"][0]["oauth_configuration"] = {"enabled": True, "dynamic_client_registration": {}}
    return threaded_edge(cfg)


@pytest.mark.parametrize("size", [1000, 60_000, 1_000_000])
def test_oauth_registration_and_token_bodies_are_refused_in_linear_time(
    threaded_edge: Callable[[dict[str, Any]], SyncEdge], size: int
) -> None:
    edge = _oauth_edge(threaded_edge)
    json_type = "Content-Type: application/json\r\n"
    nested = b"[" * size + b"]" * size
    answer = exchange(
        edge.port,
        request("POST", "/cdn-cgi/access/oauth/registration", "admin.acme.test", edge.port, json_type, nested),
    )
    if len(nested) > 64 * 1024:
        assert (answer.status, answer.body) == (
            413,
            b'{"error": "invalid_client_metadata", "error_description": "the body is larger than 65536 bytes"}',
        )
    else:
        assert (answer.status, answer.body) == (
            400,
            b'{"error": "invalid_client_metadata", "error_description": "the body is not JSON"}',
        )
    pairs = b"&".join(b"a%d=1" % i for i in range(size // 8))
    answer = exchange(
        edge.port, request("POST", "/cdn-cgi/access/oauth/token", "admin.acme.test", edge.port, body=pairs)
    )
    assert answer.status in (400, 401, 413)
    assert b'"error": "' in answer.body


@pytest.mark.parametrize("size", [1000, 100_000, 1_000_000])
def test_control_api_bodies_are_answered_in_linear_time(
    threaded_edge: Callable[[dict[str, Any]], SyncEdge], size: int
) -> None:
    """The clock's durations were quadratic (fixed in 56157de); nesting and long numbers stay refused."""
    edge = threaded_edge(base_config(ORIGIN))
    team = urlsplit(edge.team_domain).hostname
    assert team is not None
    json_type = "Content-Type: application/json\r\n"
    digits = "1" * size
    bodies = {
        b"[" * size: "the body is not JSON",
        f'{{"advance": "{digits}"}}'.encode(): f"expected a duration such as 30s, 15m or 24h, got '{digits[:60]}…'",
        # an integer: past Python's 4,300 digits json refuses it; below, the duration's bound does
        f'{{"advance": {digits}}}'.encode(): "the body is not JSON"
        if size > 4300
        else f"expected a duration within a hundred years, got a {int(digits).bit_length()}-bit number",
    }
    for body, said in bodies.items():
        answer = exchange(edge.port, request("POST", "/cdn-cgi/fakeedge/clock", team, edge.port, json_type, body))
        assert (answer.status, json.loads(answer.body)) == (400, {"error": said})


def test_many_cookies_and_headers_are_read_in_linear_time(threaded_edge: Callable[[dict[str, Any]], SyncEdge]) -> None:
    """aiohttp bounds a request's head (8,190 bytes a line, 128 headers): the most it lets through."""
    edge = threaded_edge(base_config(ORIGIN))
    cookie_line = "Cookie: " + "; ".join(["CF_Authorization=a.b"] * 370) + "\r\n"
    connection = "Connection: " + ",".join(["x"] * 4000) + "\r\n"
    headers = cookie_line * 60 + connection + "X-A: 1\r\n" * 60
    answer = exchange(edge.port, request("GET", "/" + "a/" * 4000, "admin.acme.test", edge.port, headers))
    assert answer.status == 302


# the property tests elsewhere draw short paths (a few segments of up to 8 characters): these draw
# long ones from the pieces that make normalisation work hardest
_PIECES = st.sampled_from(["/", "\\", ".", "..", "%2e", "%2F", "%", "%4", "a", "é", "//", "/./", "*"])


@given(st.lists(_PIECES, min_size=1, max_size=4000))
@settings(max_examples=max(EXAMPLES // 10, 10), deadline=None)
def test_long_paths_normalise_once_and_for_all(pieces: list[str]) -> None:
    raw = "".join(pieces)
    once = within(lambda: normalize_path(raw))
    assert once.startswith("/")
    assert normalize_path(once) == once  # idempotent: the edge and the origin-facing checks agree
    assert "//" not in once and "\\" not in once
    assert all(seg not in (".", "..") for seg in once.split("/"))


# --- what `fakeedge import` reads -----------------------------------------------------------------


# python-hcl2 (lark) reads about 50,000 characters a second: .tf sizes stop at 20,000 levels
@pytest.mark.parametrize(
    ("name", "shape", "size"),
    [
        *(("deep.json", "[{}]", size) for size in (1000, 100_000, 1_000_000)),
        *(("deep.tf", "x = [{}]", size) for size in (1000, 20_000)),
    ],
)
def test_import_refuses_deep_nesting_in_one_line(tmp_path: Path, size: int, name: str, shape: str) -> None:
    """``[`` 100,000 deep in an API export was a RecursionError traceback."""
    from click.testing import CliRunner

    from fakeedge.cli import main

    opening, closing = shape.split("{}")
    content = opening + "[" * size + "]" * size + closing
    if name.endswith(".tf"):
        content = f'resource "cloudflare_zero_trust_access_application" "a" {{\n  {content}\n}}\n'
    (tmp_path / name).write_text(content)
    result = within(lambda: CliRunner().invoke(main, ["import", str(tmp_path / name), "-o", str(tmp_path / "o.yml")]))
    assert result.exit_code == 1
    expected = "not readable JSON (nested too deeply)" if name.endswith(".json") else "not valid HCL ("
    assert result.stderr.startswith(f"fakeedge: error: {tmp_path / name}: {expected}")
    assert result.stderr.count("\n") == 1


# --- cloudflared ingress paths (spec §9.1): Go's regexp, RE2 ------------------------------------


def test_an_ingress_path_regex_that_backtracks_in_python_is_matched_in_linear_time(
    threaded_edge: Callable[[dict[str, Any]], SyncEdge],
) -> None:
    """``^/(a+)+$`` is an ordinary pattern to cloudflared (RE2); Python's ``re`` took 45 s on 30 a's."""
    cfg = base_config(ORIGIN)
    cfg["ingress"][:0] = [{"hostname": "deep.acme.test", "path": "^/(a+)+$", "service": "http_status:204"}]
    edge = threaded_edge(cfg)
    # 30 a's: about 45 s in Python's re (each one more doubles it), so a regression fails, not hangs
    for target in ("/" + "a" * 30 + "b", "/" + "a" * 8000 + "!"):
        answer = exchange(edge.port, request("GET", target, "deep.acme.test", edge.port))
        assert answer.status == 404  # the rule does not match: the catch-all rule answers
    assert exchange(edge.port, request("GET", "/aaaa", "deep.acme.test", edge.port)).status == 204


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"^/(a)\1$", r"invalid escape sequence: \1"),
        (r"^/(?=api)", "invalid perl operator: (?="),
        ("^/[", "missing ]: ["),
        (r"^/api\Z", r"invalid escape sequence: \Z; Go's end of text is \z"),
    ],
)
def test_an_ingress_path_go_would_refuse_is_a_one_line_config_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], pattern: str, reason: str
) -> None:
    from fakeedge.config import parse_config
    from fakeedge.errors import ConfigError

    cfg = base_config(ORIGIN)
    cfg["ingress"][:0] = [{"hostname": "deep.acme.test", "path": pattern, "service": ORIGIN}]
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, source="f.yml")
    assert str(info.value) == f"f.yml: ingress[0].path: not a valid regular expression ({reason})"
    assert capfd.readouterr().err == ""  # RE2 logs nothing of its own
