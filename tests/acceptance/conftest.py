"""The API document's examples against a converged cluster (`citadel verify` runs them too).

    pytest tests/acceptance --inventory inventory/lab.yml

Calls go where the document sends them: through the gateway from this machine, and directly to
a service from a host the inventory's firewall lets in (over SSH, as tests/verify does). A test
names its document section (``@pytest.mark.section``); the run ends with a table section ->
passed / failed / skipped(reason). Only a reason the inventory declares may skip: a component
with a ``skip`` reason, whose section is then reported with that reason.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from citadel.devtokens import mint_dev_token
from citadel.loader import Loaded, load_cluster
from citadel.model.cluster import Cluster, Host
from citadel.verify import testinfra_host

PRODUCTION_NETWORK = "192.168.10."
# What the gateway's route permissions ask of a token (docs/gateway.md).
PERMISSIONS = ["vector:search", "health:detailed"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "section(name): the API document section a test proves")


@dataclass
class Cluster_:
    """The converged cluster as the document's reader meets it."""

    loaded: Loaded

    @property
    def cluster(self) -> Cluster:
        return self.loaded.cluster

    def host(self, role: str) -> Host:
        hosts = self.cluster.with_role(role)
        assert hosts, f"no {role} host in this inventory"
        return hosts[0]

    def model_host(self, served_name: str) -> Host:
        for host in self.cluster.model_hosts():
            if host.model is not None and host.model.served_name == served_name:
                return host
        raise AssertionError(f"no host serves {served_name}")

    @property
    def gateway_url(self) -> str:
        gw = self.host("gateway")
        assert gw.gateway is not None
        return f"http://{gw.address}:{gw.gateway.port}"

    def on(self, host: Host) -> Any:
        return testinfra_host(self.cluster, host)

    def secret(self, name: str) -> str:
        return self.loaded.secrets[name]

    def declared_skip(self, section: str) -> str | None:
        """The inventory's reason when the component behind a section is declared skipped."""
        for host in self.cluster.hosts:
            config = getattr(host, section, None)
            if config is not None and config.skip is not None:
                return str(config.skip)
        return None

    def token(self, sub: str = "acceptance") -> str:
        """The lab mints its own (its signing key); elsewhere the inventory names a secret."""
        gw = self.host("gateway").gateway
        assert gw is not None
        auth = gw.auth
        if auth.public_key_file:
            return mint_dev_token(auth, sub, ttl_s=900, permissions=PERMISSIONS)
        name = getattr(auth, "verify_token_secret", None)
        assert name, "the gateway uses a JWKS: name a verification token secret in the inventory"
        return self.secret(str(name))


_LOADED: dict[str, Loaded] = {}


@pytest.fixture(scope="session")
def doc(request: pytest.FixtureRequest) -> Cluster_:
    path = request.config.getoption("--inventory")
    if not path:
        pytest.skip("no --inventory given")
    if path not in _LOADED:
        loaded = load_cluster(path, require_secrets=True)
        production = any(
            str(h.address).startswith(PRODUCTION_NETWORK) for h in loaded.cluster.hosts
        )
        if production and loaded.cluster.cluster.environment != "production":
            raise pytest.UsageError("refusing: production addresses in a non-production inventory")
        _LOADED[path] = loaded
    return Cluster_(_LOADED[path])


# -- the section table ------------------------------------------------------------------------
_RESULTS: dict[str, list[tuple[str, str]]] = defaultdict(list)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("section")
    if marker is None or not str(item.fspath).startswith(str(Path(__file__).parent)):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            _RESULTS[marker.args[0]].append(("skipped", str(reason).removeprefix("Skipped: ")))
        else:
            _RESULTS[marker.args[0]].append((report.outcome, item.name))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _RESULTS:
        return
    terminalreporter.section("API document sections")
    width = max(len(s) for s in _RESULTS)
    for section in sorted(_RESULTS):
        outcomes = _RESULTS[section]
        failed = [name for kind, name in outcomes if kind == "failed"]
        skipped = sorted({why for kind, why in outcomes if kind == "skipped"})
        if failed:
            result = f"FAILED ({', '.join(failed)})"
        elif skipped and not any(kind == "passed" for kind, _ in outcomes):
            result = f"skipped ({'; '.join(skipped)})"
        else:
            result = "passed"
        terminalreporter.write_line(f"{section:<{width}}  {result}")
