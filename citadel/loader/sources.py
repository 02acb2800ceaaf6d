"""Which file supplied which part of the composed inventory: what every step records, so a problem
names the file the user must edit."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sources:
    """Which file supplied what, so errors name the file the user must edit."""

    inventory: str = ""
    group_files: dict[str, str] = field(default_factory=dict)  # role -> file label
    overridden: dict[str, str] = field(default_factory=dict)  # dotted path -> file label
    files: list[str] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)  # paths already explained by one problem
