"""Where citadel keeps its state and caches on the controller: one setting each.

``CITADEL_LAB_DIR`` (default /var/lib/citadel/lab) holds the lab's keys, secrets and host trees;
``CITADEL_CACHE_DIR`` (default /var/cache/citadel) the base trees, wheels, models and pinned
artifacts. An inventory writes ``${CITADEL_LAB_DIR}`` / ``${CITADEL_CACHE_DIR}`` in its override
values, so moving either setting moves every path of the lab, and a second lab (a cold one
beside the default, say) needs nothing but the two variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_LAB_DIR = "/var/lib/citadel/lab"
DEFAULT_CACHE_DIR = "/var/cache/citadel"
LAB_ENV = "CITADEL_LAB_DIR"
CACHE_ENV = "CITADEL_CACHE_DIR"


def lab_dir() -> Path:
    """The lab's state directory (read at call time)."""
    return Path(os.environ.get(LAB_ENV) or DEFAULT_LAB_DIR)


def cache_dir() -> Path:
    """The controller's cache root (read at call time)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def expand(value: Any) -> Any:
    """``${CITADEL_LAB_DIR}`` and ``${CITADEL_CACHE_DIR}`` replaced in every string of value."""
    if isinstance(value, str):
        return value.replace(f"${{{LAB_ENV}}}", str(lab_dir())).replace(
            f"${{{CACHE_ENV}}}", str(cache_dir())
        )
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    return value
