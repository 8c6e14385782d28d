"""``edge.audit``: each deliberately flawed origin is caught on exactly its rows; the correct one passes.

The origins (tests/audit_origins.py) are real aiohttp apps verifying with PyJWT's PyJWKClient
against the edge's certs, on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from fakeedge.audit import CASES, Report
from fakeedge.testing import FakeEdge, FakeEdgeFactory

from .audit_origins import FLAWS, NO_KID_ACCEPTED, audit_origin

CERTS_ROWS = frozenset({"certs_failing", "certs_empty", "certs_slow"})
# origins that never fetch certs cannot show how they handle a certs failure: those rows are inconclusive
NO_CERTS_FETCH = frozenset({"trusts_email_header"})
STALL = 8.0  # certs_slow: past the origins' 4 s certs timeout, short of the audit's own (10 s)


def audit_config(service: Any) -> dict[str, Any]:
    """Admin (the audited app, users only) and Reports (another app of the team) on one origin."""
    staff = [{"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]}]
    return {
        "team": "acme",
        "users": [{"email": "alice@acme.test", "name": "Alice"}],
        "service_tokens": [{"name": "ci", "client_id": "a" * 32 + ".access", "client_secret": "s" * 32}],
        "apps": [
            {"name": "Admin", "domain": "admin.acme.test", "policies": staff},
            {"name": "Reports", "domain": "reports.acme.test", "policies": staff},
        ],
        "ingress": [
            {"hostname": "admin.acme.test", "service": service},
            {"hostname": "reports.acme.test", "service": service},
            {"service": "http_status:404"},
        ],
    }


def origin_url(edge: FakeEdge) -> str:
    return edge.config.ingress[0].service + "/api/me"


def verdicts(report: Report, verdict: str) -> set[str]:
    return {r.case for r in report.rows if r.verdict == verdict}


async def test_the_correct_origin_passes_every_row(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(audit_config(audit_origin("Admin")))
    report = await edge.audit(origin_url(edge), app="Admin", stall=STALL)
    assert report.ok, report
    assert [r.case for r in report.rows] == list(CASES)
    assert verdicts(report, "pass") == set(CASES), report
    assert report.row("email_header_disagrees").why == "answered as the token's user"
    assert report.row("valid").attempts[0].excerpt == '{"email": "alice@acme.test"}'
    assert str(report).splitlines()[-1] == (
        "ok: nothing was wrongly accepted and every control passed "
        "(23 passed, 0 failed, 0 warn, 0 inconclusive, 0 skipped)"
    )


@pytest.mark.parametrize("flaw", sorted(FLAWS))
async def test_each_flaw_is_reported_on_exactly_its_rows(fakeedge: FakeEdgeFactory, flaw: str) -> None:
    edge = await fakeedge(audit_config(audit_origin("Admin", flaw)))
    report = await edge.audit(origin_url(edge), app="Admin", stall=STALL, rotation_wait=3)
    assert not report.ok
    assert report.outcome == "fail"
    assert verdicts(report, "FAIL") == FLAWS[flaw], report
    unproven = CERTS_ROWS - FLAWS[flaw] if flaw in NO_CERTS_FETCH else set()
    assert verdicts(report, "inconclusive") == unproven, report
    untested = "the origin never fetched certs for the new kid, so its failure handling went untested"
    assert report.inconclusive == [f"{case}: {untested}" for case in CASES if case in unproven]
    warned = {"no_kid"} if flaw in NO_KID_ACCEPTED else set()
    assert verdicts(report, "warn") == warned, report
    assert verdicts(report, "pass") == set(CASES) - FLAWS[flaw] - unproven - warned, report
    for row in report.failures:
        assert row.why.startswith(CASES[row.case].fix) or row.case == "edge_no_credentials", row


async def test_a_failure_names_the_carrier_and_the_fix(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(audit_config(audit_origin("Admin", "cookie_unverified")))
    report = await edge.audit(origin_url(edge), app="Admin", stall=STALL)
    row = report.row("wrong_aud")
    assert row.why == "accepted a token for another audience: check aud against this app's AUD (in the cookie)"
    assert [(a.carrier, a.status, a.accepted) for a in row.attempts] == [("header", 401, False), ("cookie", 200, True)]
    assert row.did == (
        'header: 401 Authentication error: InvalidAudienceError: A...; cookie: 200 {"email": "alice@acme.test"}'
    )


async def test_a_refused_control_makes_the_run_inconclusive(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(audit_config(audit_origin("Reports")))  # the origin checks the other app's AUD
    report = await edge.audit(origin_url(edge), app="Admin", stall=STALL, rotation_wait=0)
    assert not report.ok
    assert report.inconclusive[0] == (
        f"control 'valid' refused: 401 to a valid token: does the origin expect aud {edge.aud('Admin')} "
        f"and iss {edge.team_domain}, with certs from {edge.team_domain}/cdn-cgi/access/certs?"
    )
    # refusals prove nothing when the valid token is refused too; what it accepted is still a failure
    assert report.row("expired").verdict == "inconclusive"
    assert verdicts(report, "FAIL") == {"other_app"}
    assert report.outcome == "fail"  # a failure outranks an inconclusive run
    assert str(report).splitlines()[-1].startswith("FAIL: the origin accepted what it must refuse")


async def test_a_wrong_path_or_a_dead_origin_is_inconclusive(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(audit_config(audit_origin("Admin")))
    wrong_path = await edge.audit(origin_url(edge), app="Admin", path="/api/nope", stall=STALL, rotation_wait=0)
    assert wrong_path.outcome == "inconclusive"
    # the first cause only: every later row refused too, for the same reason
    assert wrong_path.inconclusive == ["control 'valid' refused: 404: wrong path? (/api/nope)"]
    assert wrong_path.row("rotated_key").why == "refused, but so was a control"
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await runner.cleanup()  # nothing listens there now
    dead = await edge.audit(f"http://127.0.0.1:{port}/api/me", app="Admin", timeout=2, rotation_wait=0)
    assert dead.outcome == "inconclusive"
    assert dead.inconclusive[0].startswith("control 'valid' refused: origin down or wrong URL: no answer (")


async def test_accept_statuses_and_callables(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(audit_config(audit_origin("Admin", "no_aud")))
    only_204 = await edge.audit(origin_url(edge), app="Admin", accept=[204], stall=STALL, rotation_wait=0)
    assert only_204.row("valid").verdict == "inconclusive"
    assert verdicts(only_204, "FAIL") == set()
    as_callable = await edge.audit(origin_url(edge), app="Admin", accept=lambda s: s == 200, stall=STALL)
    assert verdicts(as_callable, "FAIL") == {"wrong_aud", "other_app"}


async def test_an_origin_that_waits_between_refetches_is_retried_not_flagged(fakeedge: FakeEdgeFactory) -> None:
    # PyJWKClient's cooldown: a new kid is looked up again only after it; the audit waits it out
    edge = await fakeedge(audit_config(audit_origin("Admin", cooldown=1.5)))
    report = await edge.audit(origin_url(edge), app="Admin", stall=STALL, rotation_wait=10)
    assert report.ok, report
    assert report.row("rotated_key").why.startswith("accepted after ")


async def test_service_tokens_are_expected_where_a_policy_admits_them(fakeedge: FakeEdgeFactory) -> None:
    config = audit_config(audit_origin("Admin"))
    config["apps"][0]["policies"].append(
        {"name": "bots", "decision": "non_identity", "include": [{"service_token": {"token_id": "ci"}}]}
    )
    edge = await fakeedge(config)
    report = await edge.audit(origin_url(edge), app="Admin", stall=STALL)
    assert report.ok, report
    row = report.row("service_token")
    assert (row.verdict, row.why) == ("skipped", "the app admits service tokens (policy 'bots')")


async def test_an_unprotected_path_is_flagged_through_the_edge(fakeedge: FakeEdgeFactory) -> None:
    config = audit_config(audit_origin("Admin", "serves_anyone"))
    config["apps"][0]["domain"] = "admin.acme.test/other"
    edge = await fakeedge(config)
    report = await edge.audit(origin_url(edge), app="Admin", stall=STALL)
    row = report.row("edge_no_credentials")
    assert row.verdict == "FAIL"
    assert row.why == "no Access app covers admin.acme.test/api/me: anyone reaches the origin through the edge"


async def test_without_a_configured_service_token_the_row_sends_its_shape(fakeedge: FakeEdgeFactory) -> None:
    config = audit_config(audit_origin("Admin", "service_token_as_user"))
    del config["service_tokens"]
    edge = await fakeedge(config)
    report = await edge.audit(origin_url(edge), app="Admin", stall=STALL)
    assert verdicts(report, "FAIL") == {"service_token"}, report
    assert report.row("service_token").attempts[0].excerpt == '{"email": "0123456789abcdef0123456789abcdef.a...'  # cut
