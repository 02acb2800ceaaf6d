"""Where a rotation in progress stands (`citadel rotate`): one small YAML file beside the secret.

A secret of the secrets file: ``<secrets file>.rotation.yml`` beside it (``secrets.yml`` ->
``secrets.rotation.yml``), holding the previous value: root 0600, never in git (``secrets*.yml``
is ignored) nor printed. The lab's JWT key pair: ``rotation.yml`` beside the keys (the previous
pair are files of their own there). One entry per secret being rotated::

    redis_password:
      stage: accept        # what the hosts are rendered for: accept | switch | retire
      converged: true      # the stage's converge finished
      previous: <old value>

What each stage renders (``SecretStore``, ``labsecrets.KeyRing``): servers accept the current
and the previous value during accept and switch, the current only during retire; clients use
the previous value during accept, the current one from switch on. The entry is removed once
retire converged: no entry, no rotation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import yaml

from citadel.yamlfile import display_path, load_mapping

Stage = Literal["accept", "switch", "retire"]
STAGES: tuple[Stage, ...] = ("accept", "switch", "retire")
HEADER = "# citadel rotate: rotations in progress (previous values); never commit this file\n"


@dataclass(frozen=True)
class Entry:
    stage: Stage
    converged: bool = False
    previous: str | None = None  # a secret's previous value; None for a key pair (files)

    def __repr__(self) -> str:  # never the previous value
        return f"Entry(stage={self.stage!r}, converged={self.converged})"

    @property
    def both_accepted(self) -> bool:
        """Servers accept the previous value beside the current one."""
        return self.stage in ("accept", "switch")

    @property
    def clients_use_previous(self) -> bool:
        return self.stage == "accept"


def secrets_state_path(secrets_file: str | Path) -> Path:
    """``secrets.yml`` -> ``secrets.rotation.yml`` beside it."""
    p = Path(secrets_file)
    return p.with_name(f"{p.stem}.rotation{p.suffix or '.yml'}")


class RotationState(Mapping[str, Entry]):
    """The entries of one state file; ``save`` writes it atomically (0600), or removes it when
    no rotation is left."""

    def __init__(self, path: Path, entries: Mapping[str, Entry] | None = None):
        self.path = path
        self._entries = dict(entries or {})

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"RotationState({display_path(self.path)}, {self._entries!r})"

    @classmethod
    def load(cls, path: Path) -> RotationState:
        """The file's entries (none when it does not exist); ValueError naming the problem
        (never a value) when it is malformed."""
        if not path.exists():
            return cls(path)
        data, problems = load_mapping(path)
        if problems:
            raise ValueError(str(problems[0]))
        entries: dict[str, Entry] = {}
        for name, raw in (data or {}).items():
            where = f"{display_path(path)}: {name}"
            if not isinstance(raw, dict) or raw.get("stage") not in STAGES:
                raise ValueError(f"{where}: needs a stage (one of {', '.join(STAGES)})")
            previous = raw.get("previous")
            if previous is not None and not isinstance(previous, str):
                raise ValueError(f"{where}: previous must be a string")
            if set(raw) - {"stage", "converged", "previous"}:
                raise ValueError(f"{where}: only stage, converged and previous")
            entries[str(name)] = Entry(
                stage=cast(Stage, raw["stage"]),
                converged=bool(raw.get("converged", False)),
                previous=previous,
            )
        return cls(path, entries)

    def with_entry(self, name: str, entry: Entry | None) -> RotationState:
        """This state with ``name`` set (None: removed), written to its file first."""
        entries = dict(self._entries)
        if entry is None:
            entries.pop(name, None)
        else:
            entries[name] = entry
        new = RotationState(self.path, entries)
        new.save()
        return new

    def save(self) -> None:
        if not self._entries:
            self.path.unlink(missing_ok=True)
            return
        data: dict[str, dict[str, object]] = {}
        for name, e in sorted(self._entries.items()):
            item: dict[str, object] = {"stage": e.stage, "converged": e.converged}
            if e.previous is not None:
                item["previous"] = e.previous
            data[name] = item
        write_private(self.path, HEADER + yaml.safe_dump(data, default_flow_style=False))


def write_private(path: Path, text: str | bytes) -> None:
    """Replace ``path`` atomically with ``text``, mode 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(text.encode() if isinstance(text, str) else text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
