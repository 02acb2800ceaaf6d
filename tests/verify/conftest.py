"""testinfra checks, one module per component, parametrised by the inventory.

Each module sets COMPONENT; tests taking `target` run once per host that carries that component
and report "skipped: <reason>" where the inventory skips it (its declared `skip`).

Verify tells the truth: a check may skip only for a reason the inventory declares (a component's
`skip`, or no host carrying what the check needs), raised through `DeclaredSkip`
(tests/verify/declared.py: `declared_skip`, `deployed_host`). Any other skip (`pytest.skip`,
`importorskip`, a skip mark) is turned into a failure by `pytest_runtest_makereport`, so it shows
as FAILED in the summary and in the JUnit XML. Something that legitimately needs time to settle
is waited for (bounded: `wait_for`), then fails.

    citadel verify -i inventory/lab.yml      # or: pytest tests/verify --inventory inventory/lab.yml
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import pytest

from citadel.loader import Loaded, load_cluster
from citadel.model.cluster import Cluster, Host
from citadel.render import HostView
from citadel.verify import testinfra_host
from tests.verify.declared import UNDECLARED, DeclaredSkip

PRODUCTION_NETWORK = "192.168.10."


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "declared_skip(reason): skipped for a reason the inventory declares"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    mark = item.get_closest_marker("declared_skip")
    if mark is not None:
        raise DeclaredSkip(mark.args[0], _use_item_location=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """A skip the inventory does not declare is a failure (summary and JUnit show it failed)."""
    outcome = yield
    report = outcome.get_result()
    excinfo = call.excinfo
    if not report.skipped or excinfo is None or excinfo.errisinstance(DeclaredSkip):
        return
    if hasattr(report, "wasxfail"):
        return  # an expected failure is not a skip
    reason = getattr(excinfo.value, "msg", None) or str(excinfo.value)
    report.outcome = "failed"
    report.longrepr = f"{UNDECLARED}: {reason}"


@dataclass
class Target:
    """One host under test: its model slice and a testinfra connection."""

    loaded: Loaded
    host: Host

    @property
    def cluster(self) -> Cluster:
        return self.loaded.cluster

    @property
    def infra(self) -> Any:
        return testinfra_host(self.cluster, self.host)

    def on(self, name: str) -> Any:
        """testinfra connection to another host of the inventory (for cross-host checks)."""
        return testinfra_host(self.cluster, self.cluster.host(name))

    def secret(self, name: str) -> str:
        return self.loaded.secrets[name]

    def __str__(self) -> str:
        return self.host.name


_LOADED: dict[str, Loaded] = {}


def _loaded(config: pytest.Config) -> Loaded | None:
    path = config.getoption("--inventory")
    if not path:
        return None
    if path not in _LOADED:
        loaded = load_cluster(path, require_secrets=True)
        if any(str(h.address).startswith(PRODUCTION_NETWORK) for h in loaded.cluster.hosts) and (
            loaded.cluster.cluster.environment != "production"
        ):
            raise pytest.UsageError("refusing: production addresses in a non-production inventory")
        _LOADED[path] = loaded
    return _LOADED[path]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    component = getattr(metafunc.module, "COMPONENT", None)
    loaded = _loaded(metafunc.config)
    if loaded is None or component is None:
        metafunc.parametrize(
            "target", [pytest.param(None, marks=pytest.mark.declared_skip("no --inventory given"))]
        )
        return
    params = []
    for host in loaded.cluster.hosts:
        for section, config in host.sections():
            name = getattr(config, "engine", section) if section == "model" else section
            if name != component:
                continue
            # The inventory's declared skip only (HostView.skipped_reason is pure).
            reason = HostView(loaded.cluster, host, loaded.secrets).skipped_reason(host, section)
            marks = [pytest.mark.declared_skip(reason)] if reason else []
            params.append(pytest.param(Target(loaded, host), id=host.name, marks=marks))
    if not params:
        params = [
            pytest.param(
                None, marks=pytest.mark.declared_skip(f"no host runs {component} in this inventory")
            )
        ]
    metafunc.parametrize("target", params)
