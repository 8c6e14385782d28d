"""``fakeedge import``: a team's Cloudflare Access configuration turned into a fakeedge config.

Sources (spec §14.6: reusable policies are Cloudflare's config model now):

* the API's JSON, as ``GET /accounts/{id}/access/apps``, ``/access/policies``, ``/access/groups``,
  ``/access/service_tokens`` and ``/access/organizations`` return it: the ``{"result": ...}``
  envelope or the bare objects, one file or a folder of them; each object is recognised by its
  shape, whatever the file is called;
* Terraform: ``terraform show -json`` output, and ``.tf`` files (parsed with python-hcl2, an
  optional dependency) declaring ``cloudflare_zero_trust_access_application``, ``_policy``,
  ``_group`` and ``_service_token`` (and the v4 provider's ``cloudflare_access_*`` names), in the
  v4 provider's block shapes or the v5 provider's attribute shapes.

Every source is first brought to the API's shapes, then converted once. What fakeedge cannot
emulate is never silently widened: a selector it does not know (device posture, mTLS, IdP groups,
lists whose entries are not in the export) is judged as a request here has it, *never matching*;
so it drops out of an include, makes a require unsatisfiable (the policy is left out), and drops
out of an exclude. Each such decision is a line of the report.

Secrets are never in an export: each service token gets a generated development secret, written
to the config and shown once in the report.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, assert_never

from .config import AUTHENTICATORS
from .errors import FakeEdgeError

KNOWN_RULES = frozenset(
    {
        "email", "email_domain", "everyone", "ip", "geo", "service_token", "any_valid_service_token",
        "github-organization", "oidc", "login_method", "auth_method", "group",
    }
)  # fmt: skip
APP_FIELDS_MFA = ("mfa_config",)
APP_FIELDS_COPIED = (
    "same_site_cookie_attribute", "http_only_cookie_attribute", "path_cookie_attribute", "enable_binding_cookie",
    "service_auth_401_redirect", "read_service_tokens_from_header", "options_preflight_bypass", "cors_headers",
    "custom_deny_url", "custom_non_identity_deny_url", "custom_deny_message", "session_duration",
)  # fmt: skip
APP_FIELDS_SILENT = frozenset(
    {"id", "uid", "aud", "name", "domain", "self_hosted_domains", "destinations", "type", "policies", "created_at",
     "updated_at", "account_id", "zone_id", "application_id", "scim_config", "tags", "timeouts"}
)  # fmt: skip
APP_FIELDS_APPROXIMATED = {
    "auto_redirect_to_identity": "fakeedge always shows its own sign-in page (one fake IdP)",
    "allowed_idps": "fakeedge has one fake IdP; login_method rules compare the persona's idp",
    "skip_interstitial": "fakeedge shows no interstitial",
}
POLICY_FIELDS_IGNORED = {
    "isolation_required": "browser isolation is not emulated",
    "connection_rules": "infrastructure connection rules are not emulated",
}
POLICY_FIELDS_SILENT = frozenset(
    {"id", "name", "decision", "include", "exclude", "require", "precedence", "session_duration", "reusable",
     "purpose_justification_required", "purpose_justification_prompt", "mfa_config", "approval_required",
     "app_count", "created_at", "updated_at", "account_id", "zone_id", "application_id", "uid", "approval_groups"}
)  # fmt: skip
ResourceKind = Literal["app", "policy", "group", "token"]
RESOURCE_KINDS: dict[str, ResourceKind] = {
    "application": "app",
    "policy": "policy",
    "group": "group",
    "service_token": "token",
}
_TF_TYPE = re.compile(r"cloudflare_(?:zero_trust_)?access_(application|policy|group|service_token)")
_TF_ORG = re.compile(r"cloudflare_(?:zero_trust_organization|access_organization)")
_TF_REF = re.compile(r"\$\{\s*(cloudflare_[a-z_]+)\.([A-Za-z0-9_-]+)\.(id|client_id|aud)\s*\}")


class ImportSourceError(FakeEdgeError):
    """A source that cannot be read or understood; the message names the file."""


@dataclass
class Collected:
    """Everything found in the sources, in the API's shapes."""

    apps: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)  # reusable
    groups: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[dict[str, Any]] = field(default_factory=list)
    org: dict[str, Any] = field(default_factory=dict)
    app_policies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # v4: policies per app id


@dataclass
class Report:
    """What the import emulates, approximates and ignores, and the secrets it generated."""

    emulated: list[str] = field(default_factory=list)
    approximated: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        for title, items in (
            ("emulated", self.emulated),
            ("approximated", self.approximated),
            ("ignored", self.ignored),
        ):
            yield f"{title}: {len(items)}"
            yield from (f"  {item}" for item in items)
        if self.secrets:
            yield "generated development secrets (written to the config, shown only this once):"
            yield from (f"  {item}" for item in self.secrets)


# --- reading ---------------------------------------------------------------------------------


def collect(paths: Iterable[Path]) -> Collected:
    """Read every source file (folders: their ``.json`` and ``.tf`` files, sorted)."""
    found = Collected()
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".tf") and p.is_file())
            if not files:
                raise ImportSourceError(f"{path}: no .json or .tf files in this folder")
        elif path.is_file():
            files = [path]
        else:
            raise ImportSourceError(f"{path}: no such file or folder")
        for file in files:
            if file.suffix == ".tf":
                _read_tf(file, found)
            else:
                _read_json(file, found)
    return found


def _read_json(path: Path, found: Collected) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ImportSourceError(f"{path}: not readable JSON ({exc})") from None
    except RecursionError:  # 100,000 "[" was a traceback: json's decoder recurses once a level
        raise ImportSourceError(f"{path}: not readable JSON (nested too deeply)") from None
    if isinstance(data, dict) and "values" in data and "format_version" in data:
        _read_tf_state(path, data, found)
        return
    if isinstance(data, dict) and "result" in data:
        if data.get("success") is False:
            raise ImportSourceError(f"{path}: the API answered success: false ({json.dumps(data.get('errors'))[:200]})")
        data = data["result"]
    items = data if isinstance(data, list) else [data]
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ImportSourceError(f"{path}: item {i}: expected an object, got {type(item).__name__}")
        _classify(path, i, item, found)


def _classify(path: Path, index: int, item: dict[str, Any], found: Collected) -> None:
    """Sort one API object by its shape (files are often named freely)."""
    if "auth_domain" in item:
        found.org |= item
    elif "client_id" in item:
        found.tokens.append(item)
    elif "decision" in item:
        found.policies.append(item)
    elif any(k in item for k in ("domain", "destinations", "self_hosted_domains", "aud", "type", "saas_app")):
        found.apps.append(item)
    elif "include" in item:
        found.groups.append(item)
    else:
        raise ImportSourceError(
            f"{path}: item {index}: not an Access app, policy, group, service token or organisation "
            f"(keys: {', '.join(sorted(item))[:200]})"
        )


def _read_tf_state(path: Path, data: dict[str, Any], found: Collected) -> None:
    """``terraform show -json``: resources with their values, ids resolved already."""

    def resources(module: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from module.get("resources", [])
        for child in module.get("child_modules", []):
            yield from resources(child)

    root = (data.get("values") or {}).get("root_module") or {}
    for res in resources(root):
        if res.get("mode", "managed") != "managed":
            continue
        if _TF_ORG.fullmatch(str(res.get("type", ""))):
            found.org |= res.get("values") or {}
            continue
        m = _TF_TYPE.fullmatch(str(res.get("type", "")))
        if m is None:
            continue
        values = dict(res.get("values") or {})
        values.setdefault("id", res.get("address"))
        _add_tf(m.group(1), str(res.get("address")), values, found)


def _read_tf(path: Path, found: Collected) -> None:
    try:
        import hcl2  # an optional dependency: pip install 'fakeedge[import]'
    except ImportError:
        raise ImportSourceError(
            f"{path}: reading .tf files needs python-hcl2 (pip install python-hcl2), "
            "or give `terraform show -json` output instead"
        ) from None
    try:
        with open(path, encoding="utf-8") as f:
            doc = hcl2.load(f)
    except Exception as exc:  # the parser raises lark's exceptions: any is a syntax error here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportSourceError(f"{path}: not valid HCL ({first[:200]})") from None
    for block in doc.get("resource", []):
        for rtype, named in block.items():
            rtype = _unquote(rtype)
            if _TF_ORG.fullmatch(rtype):
                for body in named.values():
                    found.org |= _hcl_values(body)
                continue
            m = _TF_TYPE.fullmatch(rtype)
            if m is None:
                continue
            for name, body in named.items():
                name = _unquote(name)
                values = _hcl_values(body)
                values.setdefault("id", f"{rtype}.{name}")
                _add_tf(m.group(1), f"{rtype}.{name}", values, found)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            out = json.loads(value)
        except ValueError:
            return value[1:-1]
        return out if isinstance(out, str) else value[1:-1]
    return value


def _hcl_values(value: Any) -> Any:
    """python-hcl2's output as plain values: strings unquoted, references as the resource address."""
    if isinstance(value, dict):
        return {_unquote(k): _hcl_values(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_hcl_values(v) for v in value]
    if isinstance(value, str):
        ref = _TF_REF.fullmatch(value.strip())
        if ref is not None:
            return f"{ref.group(1)}.{ref.group(2)}"  # the id we give that resource
        return _unquote(value)
    return value


def _add_tf(kind: str, address: str, values: dict[str, Any], found: Collected) -> None:
    resource = RESOURCE_KINDS[kind]
    match resource:
        case "app":
            found.apps.append(values)
        case "policy":
            app_id = values.get("application_id")
            if app_id:  # provider v4: a policy belongs to one app
                found.app_policies.setdefault(str(app_id), []).append(values)
            else:
                found.policies.append(values)
        case "group":
            found.groups.append(values)
        case "token":
            found.tokens.append(values)
        case _:
            assert_never(resource)


# --- rules -----------------------------------------------------------------------------------


def api_rules(items: Any) -> list[dict[str, Any]]:
    """Rules in the API's shape (``[{"email": {"email": "a@b"}}]``), from v5/API or v4 block shapes."""
    out: list[dict[str, Any]] = []
    for item in items or []:
        if not isinstance(item, dict):
            continue
        if _is_v4_block(item):
            out.extend(_expand_v4(item))
        else:
            # the v5 provider spells the API's "github-organization" with an underscore
            out.extend(
                {k.replace("github_organization", "github-organization"): v if isinstance(v, dict) else {}}
                for k, v in item.items()
                if v not in (None, False, [], "")
            )
    return out


def _is_v4_block(item: dict[str, Any]) -> bool:
    """v4's ``include { email = [..], everyone = true }``: lists and booleans, not one object."""
    present = {k: v for k, v in item.items() if v not in (None, False, [], "")}
    return any(isinstance(v, list | bool) for v in present.values()) or len(present) > 1


def _expand_v4(block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    simple = {
        "email": ("email", "email"),
        "email_domain": ("email_domain", "domain"),
        "ip": ("ip", "ip"),
        "geo": ("geo", "country_code"),
        "group": ("group", "id"),
        "service_token": ("service_token", "token_id"),
        "login_method": ("login_method", "id"),
        "email_list": ("email_list", "id"),
        "ip_list": ("ip_list", "id"),
        "device_posture": ("device_posture", "integration_uid"),
        "common_name": ("common_name", "common_name"),
    }
    for key, value in block.items():
        if value in (None, False, [], ""):
            continue
        if key in simple:
            kind, inner = simple[key]
            for v in value if isinstance(value, list) else [value]:
                yield {kind: {inner: v}}
        elif key in ("everyone", "any_valid_service_token", "certificate"):
            yield {key: {}}
        elif key == "auth_method":
            yield {"auth_method": {"auth_method": value}}
        elif key == "github":
            for gh in value if isinstance(value, list) else [value]:
                teams = gh.get("teams") or []
                base = {"name": gh.get("name"), "identity_provider_id": gh.get("identity_provider_id")}
                if teams:
                    for team in teams:
                        yield {"github-organization": {**base, "team": team}}
                else:
                    yield {"github-organization": base}
        else:
            yield {key: value[0] if isinstance(value, list) and len(value) == 1 else value}


@dataclass
class _Converter:
    report: Report
    group_ids: dict[str, str] = field(default_factory=dict)  # any id or name -> config id
    never_groups: set[str] = field(default_factory=set)  # groups that can never match here
    token_ids: set[str] = field(default_factory=set)

    def rules(self, where: str, what: str, raw: Any) -> tuple[list[dict[str, Any]], bool]:
        """(rules fakeedge can check, whether some rule can never match here)."""
        kept: list[dict[str, Any]] = []
        never = False
        for rule in api_rules(raw):
            ((kind, body),) = rule.items()
            converted = self.rule(where, what, kind, body if isinstance(body, dict) else {})
            if converted is None:
                never = True
            else:
                kept.append(converted)
        return kept, never

    def rule(self, where: str, what: str, kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if kind == "group":
            ref = str(body.get("id", ""))
            gid = self.group_ids.get(ref)
            if gid is None or gid in self.never_groups:
                why = "is not in the export" if gid is None else "can never match here"
                self.report.approximated.append(f"{where}: {what}: group {ref!r} {why}; judged as never matching")
                return None
            return {"group": {"id": gid}}
        if kind == "service_token":
            ref = str(body.get("token_id", ""))
            if ref not in self.token_ids:
                self.report.approximated.append(
                    f"{where}: {what}: service token {ref!r} is not in the export; judged as never matching"
                )
                return None
            return {"service_token": {"token_id": ref}}
        if kind == "github-organization" and body.get("team"):
            self.report.approximated.append(
                f"{where}: {what}: github-organization team {body['team']!r} (fakeedge personas have no teams); "
                "judged as never matching"
            )
            return None
        if kind not in KNOWN_RULES:
            self.report.approximated.append(
                f"{where}: {what}: '{kind}' selector is not emulated; judged as never matching"
            )
            return None
        fields = {
            "email": ("email",),
            "email_domain": ("domain",),
            "ip": ("ip",),
            "geo": ("country_code",),
            "login_method": ("id",),
            "auth_method": ("auth_method",),
            "github-organization": ("name",),
            "oidc": ("claim_name", "claim_value"),
        }.get(kind, ())
        return {kind: {f: body[f] for f in fields if body.get(f) is not None}}

    def policy(self, where: str, raw: dict[str, Any]) -> dict[str, Any] | None:
        """A policy in fakeedge's shape, or None when it can never match here (it is left out)."""
        decision = str(raw.get("decision", "")).lower()
        include, _ = self.rules(where, "include", raw.get("include"))
        require, require_never = self.rules(where, "require", raw.get("require"))
        exclude, _ = self.rules(where, "exclude", raw.get("exclude"))
        for key, why in POLICY_FIELDS_IGNORED.items():
            if raw.get(key) not in (None, False, [], {}, ""):
                self.report.ignored.append(f"{where}: {key}: {why}")
        for key in sorted(set(raw) - POLICY_FIELDS_SILENT - set(POLICY_FIELDS_IGNORED)):
            if raw.get(key) not in (None, False, [], {}, ""):
                self.report.ignored.append(f"{where}: {key}: not emulated")
        if not include or require_never:
            self.report.approximated.append(f"{where}: can never match here, left out")
            return None
        out: dict[str, Any] = {"name": str(raw.get("name") or where), "decision": decision, "include": include}
        if require:
            out["require"] = require
        if exclude:
            out["exclude"] = exclude
        if raw.get("session_duration"):
            out["session_duration"] = raw["session_duration"]
        mfa = mfa_config(raw.get("mfa_config"), where, self.report)
        if mfa is not None:
            out["mfa_config"] = mfa
        if raw.get("approval_required") and decision == "allow":
            out["approval_required"] = True  # spec §14.5: approved through the control API
            if raw.get("approval_groups"):
                # the config refuses approval_groups until fakeedge checks who approves (issue 17)
                self.report.approximated.append(
                    f"{where}: approval_groups: anyone who may call the control API approves (not the groups)"
                )
        if raw.get("purpose_justification_required") and decision == "allow":
            out["purpose_justification_required"] = True  # spec §14.5: emulated
            if raw.get("purpose_justification_prompt"):
                out["purpose_justification_prompt"] = str(raw["purpose_justification_prompt"])
        return out


# --- conversion ------------------------------------------------------------------------------


def convert(
    found: Collected, *, team: str | None = None, origin: str = "http://127.0.0.1:8080"
) -> tuple[dict[str, Any], Report]:
    """The fakeedge config (a dict, ready for YAML) and the report."""
    report = Report()
    conv = _Converter(report)
    cfg: dict[str, Any] = {}

    auth_domain = str(found.org.get("auth_domain") or "")
    cfg["team"] = team or (auth_domain.split(".", 1)[0] if auth_domain else "") or "imported"
    if not auth_domain and team is None:
        report.approximated.append("team: no organisation in the export; named 'imported' (use --team)")
    for key in ("strict_service_token_auth", "deny_unmatched_requests"):
        if key in found.org:
            cfg[key] = bool(found.org[key])
            report.emulated.append(f"organisation: {key}: {cfg[key]}")
    if "strict_service_token_auth" not in found.org:
        report.approximated.append(
            "organisation: strict_service_token_auth not in the export; fakeedge's default (strict, as for "
            "organisations created since 2026-10-05)"
        )
    if found.org.get("mfa_required_for_all_apps"):
        cfg["mfa_required_for_all_apps"] = True
        report.emulated.append("organisation: mfa_required_for_all_apps: True")
    org_mfa = mfa_config(found.org.get("mfa_config"), "organisation", report, org=True)
    if org_mfa is not None:
        cfg["mfa_config"] = org_mfa
    zones = found.org.get("deny_unmatched_requests_exempted_zone_names")
    if zones:
        cfg["deny_unmatched_requests_exempted_zone_names"] = list(zones)
    for key in sorted(set(found.org) - {"strict_service_token_auth", "deny_unmatched_requests", "auth_domain",
                                        "deny_unmatched_requests_exempted_zone_names", "name", "created_at",
                                        "updated_at", "account_id", "mfa_config", "mfa_required_for_all_apps"}):  # fmt: skip
        if found.org.get(key) not in (None, False, [], {}, ""):
            report.ignored.append(f"organisation: {key}: not emulated")

    # service tokens: ids kept, a development secret generated for each
    tokens = []
    for raw in found.tokens:
        tid = str(raw.get("id") or raw.get("name"))
        name = str(raw.get("name") or tid)
        secret = generate_secret()
        client_id = raw.get("client_id")
        if not client_id:  # a .tf file: Cloudflare makes the client id on creation
            client_id = secrets.token_hex(16) + ".access"
            report.approximated.append(f"service token {name!r}: no client_id in the source; generated {client_id}")
        token: dict[str, Any] = {"name": name, "id": tid, "client_id": str(client_id), "client_secret": secret}
        if raw.get("expires_at"):
            token["expires_at"] = str(raw["expires_at"])
        tokens.append(token)
        conv.token_ids |= {tid, name}
        report.emulated.append(f"service token {name!r} ({token['client_id']})")
        report.secrets.append(f"{name}: CF-Access-Client-Id: {token['client_id']}  CF-Access-Client-Secret: {secret}")
    if tokens:
        cfg["service_tokens"] = tokens

    # groups: in an order where each one's referenced groups come first
    groups_out: list[dict[str, Any]] = []
    for raw in found.groups:
        gid = str(raw.get("id") or raw.get("name"))
        conv.group_ids[gid] = gid
        conv.group_ids.setdefault(str(raw.get("name")), gid)
    pending = list(found.groups)
    for _ in range(len(pending) + 1):
        if not pending:
            break
        later = []
        for raw in pending:
            gid = str(raw.get("id") or raw.get("name"))
            refs = {str((r.get("group") or {}).get("id")) for k in ("include", "exclude", "require")
                    for r in api_rules(raw.get(k)) if "group" in r}  # fmt: skip
            done = {g["id"] for g in groups_out} | conv.never_groups
            if any(conv.group_ids.get(ref) not in done for ref in refs if ref in conv.group_ids):
                later.append(raw)
                continue
            where = f"group {raw.get('name')!r}"
            as_policy = conv.policy(where, {**raw, "decision": "allow", "name": raw.get("name")})
            if as_policy is None:
                conv.never_groups.add(gid)
                continue
            group = {"id": gid, "name": str(raw.get("name") or gid), "include": as_policy["include"]}
            group |= {k: as_policy[k] for k in ("exclude", "require") if k in as_policy}
            groups_out.append(group)
            report.emulated.append(where)
        pending = later
    for raw in pending:
        conv.never_groups.add(str(raw.get("id") or raw.get("name")))
        report.approximated.append(f"group {raw.get('name')!r}: its groups refer to each other; never matches")
    if groups_out:
        cfg["groups"] = groups_out

    # reusable policies
    reusable: dict[str, str] = {}  # any id -> config id
    left_out: set[str] = set()  # reusable policies that can never match here
    policies_out = []
    for raw in found.policies:
        pid = str(raw.get("id") or raw.get("name"))
        where = f"policy {raw.get('name')!r}"
        policy = conv.policy(where, raw)
        if policy is None:
            left_out.add(pid)
            continue
        policy["id"] = pid
        reusable[pid] = pid
        policies_out.append(policy)
        report.emulated.append(where)
    if policies_out:
        cfg["policies"] = policies_out

    apps_out = []
    hosts: list[str] = []
    for raw in found.apps:
        name = str(raw.get("name") or raw.get("id"))
        where = f"app {name!r}"
        app_type = str(raw.get("type") or "self_hosted")
        if app_type != "self_hosted":
            report.ignored.append(f"{where}: type {app_type!r}: only self_hosted apps are emulated; left out")
            continue
        destinations = _destinations(raw)
        if not destinations:
            report.ignored.append(f"{where}: no public destination; left out")
            continue
        app: dict[str, Any] = {"name": name, "destinations": destinations}
        if raw.get("aud"):
            app["aud"] = raw["aud"]
        for key in APP_FIELDS_COPIED:
            if raw.get(key) not in (None, ""):
                value = raw[key]
                if key == "cors_headers" and isinstance(value, list):
                    value = value[0] if value else None  # v4: a block
                if value is not None:
                    app[key] = value
        for key, why in APP_FIELDS_APPROXIMATED.items():
            if raw.get(key) not in (None, False, [], ""):
                report.approximated.append(f"{where}: {key}: {why}")
        app_mfa = mfa_config(raw.get("mfa_config"), where, report)
        if app_mfa is not None:
            app["mfa_config"] = app_mfa
        handled = set(APP_FIELDS_COPIED) | APP_FIELDS_SILENT | set(APP_FIELDS_APPROXIMATED) | set(APP_FIELDS_MFA)
        for key in sorted(set(raw) - handled):
            if raw.get(key) not in (None, False, [], {}, ""):
                report.ignored.append(f"{where}: {key}: not emulated")
        app_policies = []
        linked = [*(raw.get("policies") or []), *found.app_policies.get(str(raw.get("id")), [])]
        for n, item in enumerate(linked):
            ref = item if isinstance(item, str) else item.get("id")
            precedence = None if isinstance(item, str) else item.get("precedence")
            if ref is not None and str(ref) in reusable and (isinstance(item, str) or "include" not in item):
                entry: dict[str, Any] = {"id": reusable[str(ref)]}
            elif ref is not None and str(ref) in reusable:
                entry = {"id": reusable[str(ref)]}  # the API repeats a reusable policy in full
            elif isinstance(item, dict) and "include" in item:
                inline = conv.policy(f"{where} policy {item.get('name') or n}", item)
                if inline is None:
                    continue
                entry = inline
            elif ref is not None and str(ref) in left_out:
                continue  # reported with the policy itself
            else:
                report.approximated.append(f"{where}: policy {ref!r} is not in the export; left out")
                continue
            if precedence is not None:
                entry["precedence"] = int(precedence)
            app_policies.append(entry)
        app["policies"] = app_policies
        apps_out.append(app)
        hosts.extend(d.split("/", 1)[0] for d in destinations)
        report.emulated.append(f"{where}: {', '.join(destinations)}, {len(app_policies)} policies")
    if apps_out:
        cfg["apps"] = apps_out
    concrete = [h for h in dict.fromkeys(hosts) if "*" not in h]
    cfg["ingress"] = [{"hostname": h, "service": origin} for h in concrete] + [{"service": "http_status:404"}]
    report.approximated.append(
        f"ingress: each app host goes to {origin} (an export holds no origins; edit the ingress rules)"
    )
    return cfg, report


def mfa_config(raw: Any, where: str, report: Report, *, org: bool = False) -> dict[str, Any] | None:
    """An ``mfa_config`` in fakeedge's shape (spec §14.5), unknown authenticators reported."""
    if isinstance(raw, list):
        raw = raw[0] if raw else None  # v4: a block
    if not isinstance(raw, dict) or not raw:
        return None
    out: dict[str, Any] = {}
    if raw.get("mfa_disabled") and not org:
        out["mfa_disabled"] = True
    kinds = [str(k) for k in raw.get("allowed_authenticators") or []]
    known = [k for k in kinds if k in AUTHENTICATORS]
    for kind in kinds:
        if kind not in AUTHENTICATORS:
            report.ignored.append(f"{where}: mfa_config: authenticator {kind!r} is not emulated")
    if known:
        out["allowed_authenticators"] = known
    if raw.get("session_duration"):
        out["session_duration"] = str(raw["session_duration"])
    return out or None


def _destinations(raw: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for d in raw.get("destinations") or []:
        if isinstance(d, dict):
            if d.get("type", "public") == "public" and d.get("uri"):
                out.append(str(d["uri"]))
        elif isinstance(d, str):
            out.append(d)
    if not out:
        out = [str(d) for d in (raw.get("self_hosted_domains") or [])]
    if not out and raw.get("domain"):
        out = [str(raw["domain"])]
    return list(dict.fromkeys(out))


_ALNUM = string.ascii_letters + string.digits


def generate_secret() -> str:
    """A development client secret in the 2026 format's shape: ``cfast_`` and 48 alphanumerics (spec §5)."""
    return "cfast_" + "".join(secrets.choice(_ALNUM) for _ in range(48))
