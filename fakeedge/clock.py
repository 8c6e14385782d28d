"""The edge's notion of time: real by default, frozen, advanced or skewed on demand (tests)."""

from __future__ import annotations

import time

__all__ = ["Clock"]


class Clock:
    """Seconds since the epoch as the edge sees them.

    Every expiry fakeedge checks or writes goes through one Clock, so a test can move sessions
    and tokens past their ``exp`` without waiting. An origin's own clock does not move with it.
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._frozen: float | None = None

    def now(self) -> float:
        if self._frozen is not None:
            return self._frozen
        return time.time() + self._offset

    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    def freeze(self, at: float | None = None) -> None:
        """Stop the clock at ``at`` (default: now)."""
        self._frozen = self.now() if at is None else at

    def unfreeze(self) -> None:
        """Let time run again from where it was frozen."""
        if self._frozen is not None:
            self._offset = self._frozen - time.time()
            self._frozen = None

    def advance(self, seconds: float) -> None:
        """Jump forward (or back, with a negative value)."""
        if self._frozen is not None:
            self._frozen += seconds
        else:
            self._offset += seconds

    def skew(self, seconds: float) -> None:
        """Run ``seconds`` ahead of (or behind) real time."""
        self._frozen = None
        self._offset = seconds

    def reset(self) -> None:
        self._frozen = None
        self._offset = 0.0
