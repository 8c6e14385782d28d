"""Issue 13: reusable policies referenced by id or name, and ``precedence`` honoured (spec §6.4, §14.6)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from fakeedge.config import parse_config
from fakeedge.errors import ConfigError
from fakeedge.policy import Facts, Identity, decide

from .conftest import MakeEdge, Origin

ORIGIN = "http://127.0.0.1:9"
FACTS = Facts(ipaddress.ip_address("192.0.2.1"), "US")
ALICE = Identity(email="alice@acme.test")
MALLORY = Identity(email="mallory@evil.test")

ALLOW_ACME = {"name": "acme staff", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]}
BLOCK_ALICE = {"name": "not alice", "decision": "deny", "include": [{"email": {"email": "alice@acme.test"}}]}


def _config(app_policies: list[Any], reusable: list[Any] | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "team": "acme",
        "apps": [{"name": "Admin", "domain": "admin.acme.test", "policies": app_policies}],
        "ingress": [{"service": ORIGIN}],
    }
    if reusable is not None:
        cfg["policies"] = reusable
    return cfg


def _outcome(cfg: dict[str, Any], who: Identity | None) -> str:
    return decide(parse_config(cfg, source="f.yml").apps[0], FACTS, who).outcome


# (app policies, reusable policies, who, expected outcome): the list order loses to precedence
TABLE: list[tuple[str, list[Any], list[Any] | None, Identity | None, str]] = [
    ("list order, allow first", [ALLOW_ACME, BLOCK_ALICE], None, ALICE, "allow"),
    ("precedence puts the block first", [{**ALLOW_ACME, "precedence": 2}, {**BLOCK_ALICE, "precedence": 1}], None, ALICE, "deny"),
    ("precedence keeps the allow first", [{**BLOCK_ALICE, "precedence": 5}, {**ALLOW_ACME, "precedence": 3}], None, ALICE, "allow"),
    ("an unmarked policy has its place", [ALLOW_ACME, {**BLOCK_ALICE, "precedence": 3}], None, ALICE, "allow"),
    ("another identity is not blocked", [{**ALLOW_ACME, "precedence": 2}, {**BLOCK_ALICE, "precedence": 1}], None, MALLORY, "deny"),
    ("by name, precedence", [{"name": "acme staff", "precedence": 2}, {"name": "not alice", "precedence": 1}], [ALLOW_ACME, BLOCK_ALICE], ALICE, "deny"),
    ("by id, bare", ["p-allow"], [{**ALLOW_ACME, "id": "p-allow"}], ALICE, "allow"),
    ("by id and precedence", [{"id": "p-allow", "precedence": 1}, {"id": "p-block", "precedence": 2}], [{**ALLOW_ACME, "id": "p-allow"}, {**BLOCK_ALICE, "id": "p-block"}], ALICE, "allow"),
    ("reusable beside inline", [{"name": "not alice", "precedence": 1}, {**ALLOW_ACME, "precedence": 2}], [BLOCK_ALICE], ALICE, "deny"),
    ("no login yet: login", [{"name": "acme staff", "precedence": 1}], [ALLOW_ACME], None, "login"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("app_policies", "reusable", "who", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_precedence_and_reusable_policies_decide(
    app_policies: list[Any], reusable: list[Any] | None, who: Identity | None, expected: str
) -> None:
    assert _outcome(_config(app_policies, reusable), who) == expected


def test_a_reusable_policy_gets_a_stable_id_and_keeps_its_precedence_per_app() -> None:
    cfg = _config([{"name": "acme staff", "precedence": 7}], [ALLOW_ACME])
    (policy,) = parse_config(cfg, source="f.yml").apps[0].policies
    assert (policy.name, policy.precedence) == ("acme staff", 7)
    assert policy.id == parse_config(cfg, source="f.yml").apps[0].policies[0].id != ""


ERRORS = [
    (_config(["nope"], [ALLOW_ACME]), "f.yml: apps[0].policies[0].id: no reusable policy 'nope'; defined: acme staff"),
    (_config([{"name": "nope"}]), "f.yml: apps[0].policies[0].name: no reusable policy 'nope'; defined: none"),
    (
        _config([{**ALLOW_ACME, "precedence": 1}, {**BLOCK_ALICE, "precedence": 1}]),
        "f.yml: apps[0].policies[1].precedence: precedence 1 is taken by another policy of the app",
    ),
    (
        _config([{"name": "acme staff", "precedence": 0}], [ALLOW_ACME]),
        "f.yml: apps[0].policies[0].precedence: expected a whole number from 1, got int 0",
    ),
    (
        _config([], [ALLOW_ACME, {**BLOCK_ALICE, "name": "acme staff"}]),
        "f.yml: policies[1].name: duplicate reusable policy 'acme staff'",
    ),
    (
        _config([], [{**ALLOW_ACME, "precedence": 1}]),
        "f.yml: policies[0].precedence: belongs to an app's reference to the policy, not to the policy",
    ),
    (
        _config([], [{"decision": "allow", "include": [{"everyone": {}}]}]),
        "f.yml: policies[0].name: is required: apps refer to a reusable policy by its name or id",
    ),
    (
        _config([{"name": "acme staff", "decision": "allow"}], [ALLOW_ACME]),
        "f.yml: apps[0].policies[0].include: needs at least one rule (include is an OR over its rules)",
    ),
]


@pytest.mark.parametrize(("cfg", "message"), ERRORS)
def test_policy_reference_mistakes_are_one_line(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, source="f.yml")
    assert str(info.value) == message


def test_a_broken_reusable_policy_is_reported_once() -> None:
    cfg = _config(["acme staff"], [{**ALLOW_ACME, "decision": "permit"}])
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, source="f.yml")
    assert str(info.value).count("\n") == 0
    assert str(info.value).startswith("f.yml: policies[0].decision: unknown decision 'permit'")


async def test_the_edge_runs_reusable_policies_in_precedence_order(make_edge: MakeEdge, origin: Origin) -> None:
    from fakeedge.testing import browser_login

    from .conftest import base_config

    cfg = base_config(origin.url)
    cfg["policies"] = [
        {**ALLOW_ACME, "id": "f9d3c2a0-0000-4000-8000-000000000001"},
        {**BLOCK_ALICE, "id": "f9d3c2a0-0000-4000-8000-000000000002"},
    ]
    cfg["apps"][0]["policies"] = [
        {"id": "f9d3c2a0-0000-4000-8000-000000000001", "precedence": 2},
        {"name": "not alice", "precedence": 1},
    ]
    running = await make_edge(cfg)
    alice = await browser_login(running.client, running.url("admin.acme.test"), "alice@acme.test")
    assert alice.status == 403  # the Block at precedence 1 runs before the Allow (spec §6.4)
    running.client.cookie_jar.clear()
    bob = await browser_login(running.client, running.url("admin.acme.test"), "bob@acme.test")
    assert bob.status == 200
    assert [r.headers["Host"].split(":")[0] for r in origin.received] == ["admin.acme.test"]
