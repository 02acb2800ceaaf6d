"""Change one scalar of a YAML file in place, keeping every other byte (comments, order, quoting).

`citadel upgrade` and `citadel rollback` edit a version pin where the inventory declares it — a
group data file or an override's ``set:`` line — so the change is one reviewable line in git. A
YAML library's round trip would reflow the file; this edits the one line and then proves, by
loading both texts, that nothing else changed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml

from citadel.errors import CitadelError


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#")


def _block_end(lines: list[str], start: int, parent_indent: int) -> int:
    """The first line after ``start`` that leaves the block of a key at ``parent_indent``."""
    for i in range(start, len(lines)):
        if _content(lines[i]) and _indent(lines[i]) <= parent_indent:
            return i
    return len(lines)


def _key_line(lines: list[str], start: int, end: int, key: str) -> int | None:
    """The line of ``key`` among the first-level keys of lines[start:end]."""
    level = None
    pattern = re.compile(rf"^{re.escape(key)}\s*:(\s|$)")
    for i in range(start, end):
        if not _content(lines[i]):
            continue
        level = _indent(lines[i]) if level is None else level
        if _indent(lines[i]) == level and pattern.match(lines[i].lstrip(" ")):
            return i
    return None


def scalar(value: str) -> str:
    """``value`` as a YAML scalar that loads back as that very string (1.10 is not 1.1)."""
    if yaml.safe_load(value) == value and not value.startswith(("'", '"')):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _with_value(line: str, key: str, value: str) -> str:
    m = re.match(rf"^(\s*{re.escape(key)}\s*:\s*)([^#]*?)(\s+#.*)?$", line.rstrip("\n"))
    if m is None or m.group(2).startswith(("|", ">", "{", "[", "&", "*")):
        raise CitadelError(f"{key}: not a plain scalar line: {line.strip()!r}")
    return f"{m.group(1)}{scalar(value)}{m.group(3) or ''}\n"


def set_scalar(text: str, path: Sequence[str], value: str) -> str:
    """``text`` with the scalar at ``path`` (mapping keys) set to ``value``; a missing last key
    is added under its parent. Refuses a path whose parents are missing."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start, end, parent_indent = 0, len(lines), -1
    for depth, key in enumerate(path):
        found = _key_line(lines, start, end, key)
        if found is None:
            if depth < len(path) - 1:
                raise CitadelError(f"{'.'.join(path[: depth + 1])}: not in the file")
            child = next((_indent(x) for x in lines[start:end] if _content(x)), parent_indent + 2)
            lines.insert(start, f"{' ' * child}{key}: {scalar(value)}\n")
            break
        if depth == len(path) - 1:
            lines[found] = _with_value(lines[found], key, value)
            break
        parent_indent = _indent(lines[found])
        start, end = found + 1, _block_end(lines, found + 1, parent_indent)
    out = "".join(lines)
    _check(text, out, path, value)
    return out


def _check(before: str, after: str, path: Sequence[str], value: str) -> None:
    """Loaded, ``after`` is ``before`` with exactly that one value set."""
    want: Any = yaml.safe_load(before) or {}
    node = want
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    if yaml.safe_load(after) != want:
        raise CitadelError(f"{'.'.join(path)}: editing the line would change more than that value")


def set_override(text: str, dotted: str, value: str) -> str | None:
    """``text`` with an override's ``set:`` line for ``dotted`` (e.g.
    ``group_data.model.model.vllm.version: 0.32.0``) given ``value``; None when it has none."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, x in enumerate(lines) if re.match(rf"^\s*{re.escape(dotted)}\s*:", x)]
    if not hits:
        return None
    if len(hits) > 1:
        raise CitadelError(f"{dotted}: set by {len(hits)} overrides; keep one")
    lines[hits[0]] = _with_value(lines[hits[0]], dotted, value)
    out = "".join(lines)
    want: Any = yaml.safe_load(text)
    for override in want.get("overrides", []):
        if dotted in (override.get("set") or {}):
            override["set"][dotted] = value
    if yaml.safe_load(out) != want:
        raise CitadelError(f"{dotted}: the line is not an override's set: entry alone")
    return out
