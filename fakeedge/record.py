"""What origins received through the edge, kept for tests to assert on. Off unless a test turns it on.

The edge appends one small :class:`Record` per forwarded request when ``Edge.recorder`` is set
(the pytest fixture sets it; ``fakeedge serve`` does not, until the control API asks for it).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict, CIMultiDictProxy

from . import headers as h

if TYPE_CHECKING:
    from aiohttp import web

    from .config import App
    from .edge import Edge
    from .web_access import Admission

RECORD_LIMIT = 10_000  # the oldest records go first beyond this


@dataclass(frozen=True, slots=True)
class Record:
    """One request as the origin received it, and why the edge let it through.

    Attributes:
        method: the HTTP method.
        host: the host the client asked for (lower-case, no port).
        path: path and query, as forwarded.
        headers: the request headers sent to the origin (case-insensitive lookup).
        app: the name of the Access app that covered the request, or None (no app: plain proxy).
        policy: the name of the policy that admitted it, or None.
        decision: ``allow``, ``service`` (Service Auth) or ``bypass``; None without an app.
        claims: the ``Cf-Access-Jwt-Assertion``'s claims as the edge verified them, or None.
        ray: the Ray ID, also in the ``CF-Ray`` header and the client's response.
        at: the edge clock's time.
        grant: the managed-OAuth grant id the request came through (an ``oauth:`` token), or None.
    """

    method: str
    host: str
    path: str
    headers: CIMultiDictProxy[str]
    app: str | None
    policy: str | None
    decision: str | None
    claims: Mapping[str, Any] | None
    ray: str
    at: float
    grant: str | None = None

    @property
    def email(self) -> str | None:
        """``Cf-Access-Authenticated-User-Email``, as the origin got it."""
        return self.headers.get(h.AUTHENTICATED_USER_EMAIL)

    @property
    def assertion(self) -> str | None:
        """``Cf-Access-Jwt-Assertion``, as the origin got it."""
        return self.headers.get(h.JWT_ASSERTION)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; header names lower-cased, repeated headers joined with ``, ``."""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            low = name.lower()
            headers[low] = f"{headers[low]}, {value}" if low in headers else value
        return {
            "method": self.method,
            "host": self.host,
            "path": self.path,
            "headers": headers,
            "app": self.app,
            "policy": self.policy,
            "decision": self.decision,
            "claims": dict(self.claims) if self.claims is not None else None,
            "ray": self.ray,
            "at": self.at,
            "grant": self.grant,
        }


class RequestLog:
    """The records, oldest first: iterate, index (``log[-1]``), ``len()``, :attr:`last`, :meth:`clear`."""

    def __init__(self, limit: int = RECORD_LIMIT) -> None:
        self._records: collections.deque[Record] = collections.deque(maxlen=limit)

    def observe(
        self,
        request: web.Request,
        host: str,
        headers: CIMultiDict[str],
        admission: Admission | None,
        app: App | None,
        edge: Edge,
        ray: str,
    ) -> None:
        """Append what the edge is about to send to the origin (called by the proxy)."""
        claims = None
        grant = None
        if admission is not None and admission.assertion:
            cred = admission.credential or edge.credential(admission.assertion)
            claims = dict(cred.claims) if cred is not None else None
            if cred is not None and cred.session is not None and edge.oauth.grants:
                found = edge.oauth.grant_of_session(cred.session.nonce)
                grant = found.id if found is not None else None
        verdict = admission.verdict if admission is not None else None
        self._records.append(
            Record(
                method=request.method,
                host=host,
                path=request.path_qs,
                headers=CIMultiDictProxy(CIMultiDict(headers)),
                app=app.name if app is not None else None,
                policy=verdict.policy.name if verdict is not None and verdict.policy is not None else None,
                decision=verdict.outcome if verdict is not None else None,
                claims=claims,
                ray=ray,
                at=edge.clock.now(),
                grant=grant,
            )
        )

    @property
    def last(self) -> Record:
        """The latest record.

        Raises:
            AssertionError: the origin has received nothing through the edge.
        """
        if not self._records:
            raise AssertionError("the origin received nothing through the edge")
        return self._records[-1]

    def clear(self) -> None:
        self._records.clear()

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self._records]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def __getitem__(self, index: int) -> Record:
        return self._records[index]
