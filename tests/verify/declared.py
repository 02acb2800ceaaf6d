"""Skips the inventory declares, and bounded waits: what tests/verify modules may use instead of
`pytest.skip` (which tests/verify/conftest.py turns into a failure)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

import pytest

from citadel.model.cluster import Cluster, Host

UNDECLARED = "undeclared skip (the inventory declares no such reason)"
T = TypeVar("T")


class DeclaredSkip(pytest.skip.Exception):  # type: ignore[name-defined, misc]
    """A skip for a reason the inventory declares; every other skip fails."""

    __module__ = "builtins"  # reported as "DeclaredSkip: <reason>", like pytest's "Skipped: ..."


def declared_skip(reason: str) -> NoReturn:
    """Skip for an inventory-declared reason (a component's `skip`, no host carrying a role)."""
    raise DeclaredSkip(reason)


def deployed_host(cluster: Cluster, section: str) -> Host:
    """The first host the inventory deploys `section` on; else a declared skip saying why."""
    carrying = [h for h in cluster.hosts if any(s == section for s, _ in h.sections())]
    for h in carrying:
        if getattr(h, section).skip is None:
            return h
    if carrying:
        reasons = "; ".join(f"{h.name}: {getattr(h, section).skip}" for h in carrying)
        declared_skip(f"the inventory skips {section} ({reasons})")
    declared_skip(f"no host runs {section} in this inventory")


def wait_for(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout_s: float,
    interval_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `probe` until `done(result)` or `timeout_s` passed; the last result (bounded retry
    for what needs time to settle after a converge; the caller asserts on it)."""
    deadline = clock() + timeout_s
    while True:
        result = probe()
        if done(result) or clock() >= deadline:
            return result
        sleep(interval_s)
