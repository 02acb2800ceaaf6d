"""Problems found in user input, reported as `FILE: dotted.path: message` lines."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located by file and field path."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}: {where}{self.message}"


class CitadelError(Exception):
    """An error meant for the user: printed as one line, never as a traceback."""


class InventoryError(CitadelError):
    """The inventory (or its group data or secrets) is invalid; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
