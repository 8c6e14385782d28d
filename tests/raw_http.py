"""HTTP answers read off raw sockets, for the tests that talk to the edge byte for byte."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    interim: list[int] = field(default_factory=list)  # the 1xx statuses that came before

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def parse_head(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    """The status and the header fields of an answer's head (its blank line left out or not)."""
    lines = head.removesuffix(b"\r\n\r\n").decode("latin-1").split("\r\n")
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return int(lines[0].split(" ", 2)[1]), headers
