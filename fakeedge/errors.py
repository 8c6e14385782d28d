"""The exceptions fakeedge raises. Only ``cli.py`` turns them into exit codes."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["ConfigError", "FakeEdgeError", "KeyStoreError", "UnknownName"]

# Characters that would break "one error, one line" or rewrite a terminal: C0/C1 controls and
# the Unicode line and paragraph separators (str.splitlines() splits on all of them).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with control characters and line breaks shown as escapes (``\\n``, ``\\x07``)."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


class FakeEdgeError(Exception):
    """Root of every error fakeedge raises for a user mistake or a broken environment."""


class ConfigError(FakeEdgeError):
    """A configuration value is wrong.

    The message names the file, the key path and what was expected, on one line:
    ``fakeedge.yml: apps[1].policies[0].include[2]: unknown rule 'emial'; did you mean 'email'?``

    One exception may carry several independent errors (see :meth:`combine`): then ``errors``
    holds each, and ``str()`` gives one line per error.
    """

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        self.errors: tuple[ConfigError, ...] = (self,)
        where = f"{source}: {key}" if key else source
        super().__init__(one_line(f"{where}: {message}"))

    @classmethod
    def combine(cls, errors: Sequence[ConfigError]) -> ConfigError:
        """One exception for several errors, in the order given; each keeps its own line.

        Raises:
            ValueError: ``errors`` holds no error.
        """
        flat = tuple(e for error in errors for e in error.errors)
        if not flat:
            raise ValueError("no errors to combine")
        first = flat[0]
        combined = cls(first.source, first.key, first.message)
        combined.errors = flat
        combined.args = ("\n".join(str(e) for e in flat),)
        return combined


class KeyStoreError(FakeEdgeError):
    """The signing keys on disk cannot be read or written."""


class UnknownName(FakeEdgeError, LookupError):
    """An app, service token or host name that the config does not define."""

    @classmethod
    def among(cls, what: str, name: str, known: list[str], plural: str | None = None) -> UnknownName:
        """``no <what> named 'x'; did you mean 'y'? <plural>: a, b`` (the closest known name, if any)."""
        return cls(
            f"no {what} named {name!r}{did_you_mean(name, known)} {plural or what + 's'}: {', '.join(known) or 'none'}"
        )


def did_you_mean(name: str, known: list[str]) -> str:
    """``; did you mean 'y'?`` for the known name closest to ``name``, else an empty string."""
    import difflib

    hint = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""
