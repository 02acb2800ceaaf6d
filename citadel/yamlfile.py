"""YAML reading: every failure becomes a Problem (no traceback); duplicate keys are errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from citadel.errors import Problem


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (a silent last-one-wins hides typos)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def display_path(path: Path | str) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def load_mapping(path: Path) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Read a YAML file that must hold a mapping (an empty file is an empty mapping)."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        return None, [Problem(shown, "", "is a directory, not a YAML file")]
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None, [Problem(shown, "", f"cannot read: {reason}")]
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return None, [Problem(shown, "", f"{where}invalid YAML: {exc.problem}")]
    except yaml.YAMLError as exc:
        return None, [Problem(shown, "", f"invalid YAML: {exc}")]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        kind = type(data).__name__
        return None, [Problem(shown, "", f"expected a mapping at the top level, got {kind}")]
    return data, []
