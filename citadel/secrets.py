"""Secrets: from CITADEL_SECRET_<NAME> or an untracked YAML file; only names ever reach output."""

from __future__ import annotations

import os
import secrets as _random
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import yaml

from citadel.errors import Problem
from citadel.model.common import secret_env_name
from citadel.rotation_state import Entry, RotationState, secrets_state_path, write_private
from citadel.yamlfile import display_path, load_mapping

MASK = "********"
SECRETS_FILE_ENV = "CITADEL_SECRETS_FILE"


class SecretStore(Mapping[str, str]):
    """Secret values by name: what a client of the secret presents. During a rotation's accept
    stage (``rotations``, from the state file beside the secrets file) that is still the
    previous value; ``accepted`` is what a server checking it accepts (citadel.rotation_state).
    """

    def __init__(
        self,
        values: Mapping[str, str],
        source: str = "environment",
        rotations: Mapping[str, Entry] | None = None,
    ):
        self._values = dict(values)
        self.source = source
        self.rotations = dict(rotations or {})

    def __getitem__(self, name: str) -> str:
        entry = self.rotations.get(name)
        if entry is not None and entry.previous is not None and entry.clients_use_previous:
            return entry.previous
        return self._values[name]

    def accepted(self, name: str) -> list[str]:
        """The values a server checking ``name`` accepts: the current one, and the previous
        one while a rotation's accept or switch stage is in force."""
        values = [self._values[name]]
        entry = self.rotations.get(name)
        previous = entry.previous if entry is not None and entry.both_accepted else None
        if previous is not None and previous not in values:
            values.append(previous)
        return values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:  # never print values
        return f"SecretStore({sorted(self._values)}, source={self.source!r})"

    def missing(self, names: Iterable[str]) -> list[str]:
        return sorted({n for n in names if not self._values.get(n)})


class MaskedSecrets(SecretStore):
    """For previews (`citadel render`, plans): every secret reads as the mask."""

    def __init__(self) -> None:
        super().__init__({}, source="masked")

    def __getitem__(self, name: str) -> str:
        return MASK

    def accepted(self, name: str) -> list[str]:
        return [MASK]

    def missing(self, names: Iterable[str]) -> list[str]:
        return []


def load_secrets(default_file: str | None = None) -> tuple[SecretStore, list[Problem]]:
    """Environment variables win over the secrets file (CITADEL_SECRETS_FILE, else the default)."""
    values: dict[str, str] = {}
    problems: list[Problem] = []
    file = secrets_file_path(default_file)
    source = "environment"
    rotations: dict[str, Entry] = {}
    if file is not None:
        if file.exists() or os.environ.get(SECRETS_FILE_ENV):
            data, problems = load_mapping(file)
            source = display_path(file)
            for key, value in (data or {}).items():
                if not isinstance(value, str | int) or isinstance(value, bool):
                    problems.append(Problem(source, str(key), "a secret must be a string"))
                else:
                    values[str(key)] = str(value)
        state_file = secrets_state_path(file)
        try:
            state = RotationState.load(state_file)
        except ValueError as exc:
            problems.append(Problem(display_path(state_file), "", str(exc)))
        else:
            rotations = {n: e for n, e in state.items() if e.previous is not None}
    prefix = "CITADEL_SECRET_"
    for env, value in os.environ.items():
        if env.startswith(prefix) and value:
            name = env[len(prefix) :].lower()
            values[name] = value
            if name in rotations:
                problems.append(
                    Problem(
                        env,
                        name,
                        "is being rotated in the secrets file (citadel rotate): unset the "
                        "variable, or the rotation's values are not the ones deployed",
                    )
                )
    return SecretStore(values, source, rotations), problems


def secrets_file_path(default_file: str | None = None) -> Path | None:
    """The secrets file in use: CITADEL_SECRETS_FILE, else the inventory's (None: neither)."""
    file = os.environ.get(SECRETS_FILE_ENV) or default_file
    return Path(file) if file else None


def read_secrets_file(path: Path) -> dict[str, str]:
    loaded, problems = load_mapping(path)
    if problems:
        raise ValueError(str(problems[0]))
    return {str(k): str(v) for k, v in (loaded or {}).items()}


def write_secrets_file(path: Path, data: Mapping[str, str]) -> None:
    """The whole file, atomically, mode 0600 (comments are not kept)."""
    write_private(
        path,
        "# generated by citadel; never commit this file\n"
        + yaml.safe_dump(dict(sorted(data.items())), default_flow_style=False),
    )


def new_secret_value() -> str:
    return _random.token_urlsafe(24)


def missing_secret_problems(
    needed: Mapping[str, list[str]], store: SecretStore, file_label: str
) -> list[Problem]:
    """One problem per missing secret, naming who uses it and how to provide it; never a value."""
    out = []
    for name in store.missing(needed):
        users = ", ".join(needed[name])
        out.append(
            Problem(
                file_label,
                name,
                f"secret is missing (used by {users}); set {secret_env_name(name)} "
                f"or add it to the file named by {SECRETS_FILE_ENV}",
            )
        )
    return out


def generate_secrets_file(path: Path, names: Iterable[str]) -> list[str]:
    """Create or complete an untracked secrets file (mode 0600); returns the names it added."""
    data = read_secrets_file(path) if path.exists() else {}
    added = [n for n in sorted(set(names)) if n not in data]
    for name in added:
        data[name] = new_secret_value()
    if added or not path.exists():
        write_secrets_file(path, data)
    return added
