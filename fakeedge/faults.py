"""``/cdn-cgi/access/certs`` misbehaving for a while: slow, empty or failing (spec §3, §11).

Origins cache the key set and refetch it on an unknown ``kid``; these faults show what they do
when the fetch is slow, returns no keys, or fails, without touching the origin's code.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Literal, assert_never, get_args

from .config import parse_duration

__all__ = ["CertsFault", "CertsFaultMode", "certs_fault"]

CertsFaultMode = Literal["slow", "empty", "failing"]
CERTS_FAULT_MODES: tuple[CertsFaultMode, ...] = get_args(CertsFaultMode)
EMPTY_CERTS = b'{"keys":[],"public_certs":[]}'
FAILING_BODY = (
    b"<html><head><title>500 Internal Server Error</title></head><body><h1>500 Internal Server Error</h1></body></html>"
)


@dataclass(eq=False)
class CertsFault:
    """One fault in effect on the certs endpoint. Use :func:`certs_fault` to make one.

    It ends after ``times`` certs requests, at ``until`` on the edge clock, or when cleared,
    whichever comes first. As a context manager it clears itself on exit.
    """

    mode: CertsFaultMode
    delay: float = 0.0  # slow: seconds before the normal answer
    times: int | None = None
    until: float | None = None
    served: int = 0
    _cleared: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def active(self, now: float) -> bool:
        return (
            not self._cleared.is_set()
            and (self.times is None or self.served < self.times)
            and (self.until is None or now < self.until)
        )

    async def apply(self, now: float) -> tuple[int, str, bytes] | None:
        """Take one certs request: the (status, content type, body) to send instead, or None for the normal answer."""
        if not self.active(now):
            return None
        self.served += 1
        match self.mode:
            case "slow":
                # wait out the delay, or less if the fault is cleared (teardown must not wait for it)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cleared.wait(), self.delay)
                return None
            case "empty":
                return 200, "application/json", EMPTY_CERTS
            case "failing":
                return 500, "text/html", FAILING_BODY
            case _:
                assert_never(self.mode)

    def clear(self) -> None:
        """End the fault now; a slow request in progress is answered at once."""
        self._cleared.set()

    def __enter__(self) -> CertsFault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()


MAX_DELAY = 3600.0  # a slow certs endpoint, not a hung one


def certs_fault(
    mode: str,
    *,
    now: float,
    delay: float | str = 5.0,
    times: int | None = None,
    duration: float | str | None = None,
) -> CertsFault:
    """A fault for the certs endpoint, checked.

    Args:
        mode: ``slow`` (answer after ``delay``), ``empty`` (``{"keys":[]}``) or ``failing`` (500).
        now: the edge clock's time; ``duration`` counts from it.
        delay: for ``slow``: seconds (or ``"2s"``) before the normal answer.
        times: end after this many certs requests.
        duration: end after this long on the edge clock (seconds or ``"10m"``).

    Raises:
        ValueError: an unknown mode or a bad number; the message says which.
    """
    if mode not in CERTS_FAULT_MODES:
        raise ValueError(f"unknown certs fault {mode!r}; valid: {', '.join(CERTS_FAULT_MODES)}")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError(f"times: expected a whole number of requests from 1, got {times!r}")
    seconds = parse_duration(delay)
    if not 0 <= seconds <= MAX_DELAY:
        raise ValueError(f"delay: expected 0 to {MAX_DELAY:g} seconds, got {delay!r}")
    until = None if duration is None else now + parse_duration(duration)
    return CertsFault(mode, seconds, times, until)
