"""Rolling model servers: the waves `citadel apply` converges, and the pause between them until
the gateway routes to the wave's backends again.

A model server that restarted answers its own port at once, but the gateway re-admits it only at
its next health probe (every 5 s, two failed probes eject) and, if its breaker opened during the
restart, after ``breaker_open_s`` (10 s) and one half-open request: the gateway's defaults, which
the rendered config keeps. So after a wave `apply` waits ``SETTLE_S`` and then until the gateway's
public `/health` shows every model of the wave served by at least one backend (bounded), and
only then takes the next wave's backends down. (Which backend serves is only in
`/health?detailed=true`, which needs a token `apply` cannot mint against a JWKS.)
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


SETTLE_S = 11.0  # > max(2 probe intervals, breaker_open_s) of the gateway's defaults
SERVED = ("healthy", "degraded")


def fetch_services(url: str) -> dict[str, str]:
    """/health's services map; empty when the gateway does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return dict(json.loads(resp.read()).get("services") or {})
    except (OSError, ValueError, urllib.error.URLError):
        return {}


def wait_until_served(
    url: str,
    services: set[str],
    *,
    settle_s: float = SETTLE_S,
    timeout_s: float = WAIT_S,
    fetch: Callable[[str], dict[str, str]] = fetch_services,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, str]:
    """After ``settle_s``, poll until every service has a backend serving; returns those that
    do not (empty: all served)."""
    sleep(settle_s)
    deadline = clock() + timeout_s
    while True:
        states = fetch(url)
        missing = {s: states.get(s, "unreachable") for s in services if states.get(s) not in SERVED}
        if not missing or clock() >= deadline:
            return missing
        sleep(POLL_S)
