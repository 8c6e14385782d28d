"""Issue 13: "Require Access protection" (spec §14.4): hosts no app covers get the block page unless exempted."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from fakeedge.config import parse_config
from fakeedge.errors import ConfigError

from .conftest import MakeEdge, Origin, base_config


def _config(origin: Origin, **org: Any) -> dict[str, Any]:
    cfg = base_config(origin.url)
    cfg["ingress"].insert(-1, {"hostname": "*.tools.test", "service": origin.url})
    return cfg | org


@pytest.mark.parametrize(
    ("host", "exempt", "status"),
    [
        ("public.acme.test", [], 403),  # no app covers it
        ("public.acme.test", ["acme.test"], 200),  # a host of an exempted zone
        ("public.acme.test", ["ACME.test."], 200),  # zone names are host names: case and root dot
        ("wiki.tools.test", ["acme.test"], 403),
        ("wiki.tools.test", ["acme.test", "tools.test"], 200),
        ("wiki.tools.test", ["ols.test"], 403),  # a suffix that is no whole label is no zone
        ("teapot.acme.test", [], 403),  # before the ingress: no http_status either
    ],
)
async def test_unprotected_hosts_get_the_block_page(
    make_edge: MakeEdge, origin: Origin, host: str, exempt: list[str], status: int
) -> None:
    cfg = _config(origin, deny_unmatched_requests=True, deny_unmatched_requests_exempted_zone_names=exempt)
    running = await make_edge(cfg)
    resp = await running.client.get(running.url(host, "/x"), allow_redirects=False)
    assert resp.status == status
    if status == 403:
        html = await resp.text()
        assert "This resource requires Cloudflare Access protection." in html
        data = re.search(r'<div id="json_data" hidden>(.*?)</div>', html)
        assert data is not None and json.loads(data.group(1).replace("&#x27;", "'"))["aud"] == ""
        assert origin.received == []
    else:
        assert origin.last.headers["Host"].split(":")[0] == host
    assert running.edge.recorder is not None
    (record,) = [r for r in running.edge.recorder.all() if r.kind != "control"]
    assert (record.status, record.kind, record.reason) == (
        (403, "unprotected", "no Access application covers this host and deny_unmatched_requests blocks it")
        if status == 403
        else (200, "route", "no Access application covers this host and path")
    )


async def test_protected_hosts_and_the_team_domain_are_unchanged(make_edge: MakeEdge, origin: Origin) -> None:
    running = await make_edge(_config(origin, deny_unmatched_requests=True))
    assert (await running.client.get(running.url("admin.acme.test"), allow_redirects=False)).status == 302
    assert (await running.client.get(running.team + "/cdn-cgi/access/certs")).status == 200
    assert (await running.client.get(running.url("public.acme.test", "/cdn-cgi/access/certs"))).status == 200


async def test_off_by_default(make_edge: MakeEdge, origin: Origin) -> None:
    running = await make_edge(_config(origin))
    assert (await running.client.get(running.url("public.acme.test"), allow_redirects=False)).status == 200


def test_exempted_zone_mistakes_are_one_line() -> None:
    cfg = base_config("http://127.0.0.1:9") | {"deny_unmatched_requests_exempted_zone_names": ["acme.test", "a b"]}
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, source="f.yml")
    assert str(info.value) == (
        "f.yml: deny_unmatched_requests_exempted_zone_names[1]: expected a zone name such as acme.test, got 'a b'"
    )


@pytest.mark.parametrize(
    ("exempt", "expected"),
    [
        ([], "outcome   403 block page: deny_unmatched_requests (Require Access protection, spec §14.4)"),
        (["acme.test"], "outcome   proxied without Access (spoofable headers still stripped)"),
    ],
)
def test_explain_knows_require_access_protection(exempt: list[str], expected: str) -> None:
    from fakeedge.explain import explain

    cfg = base_config("http://127.0.0.1:9") | {
        "deny_unmatched_requests": True,
        "deny_unmatched_requests_exempted_zone_names": exempt,
    }
    assert explain(parse_config(cfg, source="f.yml"), "http://public.acme.test/")[-1] == expected
