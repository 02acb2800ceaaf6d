"""Rolling model servers: the waves `citadel apply` converges, and the wait between them until
the gateway serves the wave's models from every backend again.

A model server that restarted answers its own port at once, but the gateway re-admits it only
after its next health probe (every few seconds). Starting the next wave before that would take
down a model's last backend the gateway still routes to; so `apply` reads the gateway's public
`/health` before a wave and, after it, polls until every model of the wave is served at least as
well as before (`healthy`: all backends up; `degraded`: some).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from citadel.components.gateway import HEALTH_NAMES
from citadel.model.cluster import Cluster, Host

WAIT_S = 90.0
POLL_S = 1.0


def rollout_phases(hosts: list[Host]) -> list[list[str]]:
    """Host names in the order `apply` converges them.

    Model hosts go in waves: wave k holds the k-th host of every served model, so a model with
    several backends always keeps all but one of them serving, while models with one backend
    each converge together (rolling those one by one would keep nothing more up, only take
    longer). With a single wave everything is one pyinfra run; with more, the other hosts come
    first, then each wave.
    """
    others = [h.name for h in hosts if h.model is None]
    by_model: dict[str, list[str]] = {}
    for h in hosts:
        if h.model is not None:
            by_model.setdefault(h.model.served_name, []).append(h.name)
    depth = max((len(names) for names in by_model.values()), default=0)
    waves = [[names[k] for names in by_model.values() if k < len(names)] for k in range(depth)]
    if len(waves) <= 1:
        return [others + (waves[0] if waves else [])]
    return [p for p in (others, *waves) if p]


def health_url(cluster: Cluster) -> str | None:
    """The gateway's public /health, when the inventory deploys a gateway."""
    for h in cluster.with_role("gateway"):
        if h.gateway is not None and h.gateway.skip is None:
            return f"http://{h.address}:{h.gateway.port}/health"
    return None


def services_of(cluster: Cluster, names: list[str]) -> set[str]:
    """The /health service names of the models served by these hosts."""
    out = set()
    for name in names:
        host = cluster.host(name)
        if host.model is not None:
            out.add(HEALTH_NAMES[host.model.api])
    return out


RANK = {"healthy": 2, "degraded": 1}


def fetch_services(url: str) -> dict[str, str]:
    """/health's services map; empty when the gateway does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return dict(json.loads(resp.read()).get("services") or {})
    except (OSError, ValueError, urllib.error.URLError):
        return {}


def targets(before: dict[str, str], services: set[str]) -> dict[str, str]:
    """What each service must be again after the wave: as good as it was before it (a backend
    that was not serving before, e.g. a new host, is not waited for)."""
    return {s: before[s] for s in services if before.get(s) in RANK}


def wait_until_served(
    url: str,
    want: dict[str, str],
    *,
    timeout_s: float = WAIT_S,
    fetch: Callable[[str], dict[str, str]] = fetch_services,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, str]:
    """Poll until every service is at least as served as `want` says; returns those that are
    not (empty: all served)."""
    deadline = clock() + timeout_s
    while True:
        states = fetch(url)
        missing = {
            s: states.get(s, "unreachable")
            for s, state in want.items()
            if RANK.get(states.get(s, ""), 0) < RANK[state]
        }
        if not missing or clock() >= deadline:
            return missing
        sleep(POLL_S)
