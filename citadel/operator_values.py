"""Operator-supplied inventory values: what only the operators of a cluster know (their Clerk
instance), shipped as an explicit ``REPLACE-ME`` sentinel that nothing accepts as done.

The Clerk instance is not a secret: its values belong in git, reviewed like any other setting,
so the rendered gateway config stays reproducible from the repository alone. Until an operator
writes them (in group_data, or in an inventory that extends production with a named override),
the sentinel keeps the inventory loadable (render previews, unit tests) while ``citadel
validate``, ``plan``, ``apply`` and ``verify`` refuse it with one line naming the file, the key
and what to put there. The sentinel URLs are under ``.invalid`` (RFC 2606): they never resolve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from citadel.errors import Problem

SENTINEL = "REPLACE-ME"

# Dotted key within a host's sections -> what the operators put there.
HINTS = {
    "gateway.auth.jwks_url": (
        "your Clerk instance's JWKS URL: its Frontend API URL + /.well-known/jwks.json "
        "(Clerk dashboard, API keys; docs/gateway-auth.md)"
    ),
    "gateway.auth.issuers": (
        "your Clerk instance's issuer: its Frontend API URL, https://... exactly as the "
        "tokens' iss claim carries it (docs/gateway-auth.md)"
    ),
}
GENERIC_HINT = "the value the comment beside it asks for (an operator-supplied setting)"

Origin = Callable[[tuple[Any, ...]], tuple[str, str]]


def is_unfilled(value: Any) -> bool:
    return isinstance(value, str) and SENTINEL.lower() in value.lower()


def unfilled(hosts: list[Any], origin: Origin) -> list[Problem]:
    """One problem per key still holding the sentinel in the merged hosts, at the file that sets
    it (``origin``: the loader's file-and-path for a location)."""
    found: dict[tuple[str, str], str] = {}
    for i, host in enumerate(hosts):
        if not isinstance(host, dict):
            continue
        for section, value in host.items():
            for loc in _sentinel_locations(value, (section,)):
                key = ".".join(str(p) for p in loc if not isinstance(p, int))
                file, shown = origin(("hosts", i, *loc))
                # a list holding the sentinel is one key to fill, however many hosts inherit it
                shown = shown.rsplit("[", 1)[0] if isinstance(loc[-1], int) else shown
                found.setdefault((file, shown), key)
    return [
        Problem(
            file,
            shown,
            f"operator-supplied value not filled in ({SENTINEL}): put "
            f"{HINTS.get(key, GENERIC_HINT)} here",
        )
        for (file, shown), key in found.items()
    ]


def _sentinel_locations(value: Any, loc: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    if is_unfilled(value):
        return [loc]
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in _sentinel_locations(v, (*loc, k))]
    if isinstance(value, list):
        return [x for n, v in enumerate(value) for x in _sentinel_locations(v, (*loc, n))]
    return []
