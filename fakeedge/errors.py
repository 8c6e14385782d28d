"""The exceptions fakeedge raises. Only ``cli.py`` turns them into exit codes."""

from __future__ import annotations


class FakeEdgeError(Exception):
    """Root of every error fakeedge raises for a user mistake or a broken environment."""


class ConfigError(FakeEdgeError):
    """A configuration value is wrong.

    The message names the file, the key path and what was expected, on one line:
    ``fakeedge.yml: apps[1].policies[0].include[2]: unknown rule 'emial'; did you mean 'email'?``
    """

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class KeyStoreError(FakeEdgeError):
    """The signing keys on disk cannot be read or written."""


class UnknownName(FakeEdgeError, LookupError):
    """An app, service token or host name that the config does not define."""
