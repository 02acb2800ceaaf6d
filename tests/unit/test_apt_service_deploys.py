"""The services Debian packages share one deploy shape (``deploys._service.apt_service``): their
operation names, order and conditions are those the lab's idempotence check knows, and each
component's operations stay its own between hosts with different components (pyinfra's CLI
identifies an operation by its call stack)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import deploy_harness as h
import pyinfra
import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

from citadel.components import postgres
from deploys import node_exporter, postgres_exporter, redis, redis_exporter

FACTS: dict[Any, Any] = {
    "LinuxDistribution": h.DISTROS["debian13"],
    "PostgresState": {"roles": {}},
}


def dropin(component: str, unit: str) -> list[tuple[str, bool]]:
    """A packaged unit's sandbox drop-in: written, then systemd reloads its units if it changed."""
    path = f"/etc/systemd/system/{unit}.service.d/50-citadel-sandbox.conf"
    return [
        (f"{component}: configure | Write {path}", False),
        (f"{component}: configure | Reload systemd units ({path} changed)", True),
    ]


EXPECTED = {
    "node_exporter": [
        ("node_exporter: install | Install prometheus-node-exporter", False),
        ("node_exporter: configure | Write /etc/default/prometheus-node-exporter", False),
        *dropin("node_exporter", "prometheus-node-exporter"),
        ("node_exporter: activate | Restart prometheus-node-exporter (config changed)", True),
        ("node_exporter: activate | Run prometheus-node-exporter", False),
    ],
    "redis": [
        ("redis: install | Install redis-server", False),
        ("redis: configure | Write /usr/local/lib/citadel/redis-checkconf", False),
        ("redis: configure | Stage /etc/redis/users.acl", False),
        (
            "redis: configure | Check /etc/redis/users.acl with "
            "/usr/local/lib/citadel/redis-checkconf",
            True,
        ),
        ("redis: configure | Write /etc/redis/users.acl", False),
        ("redis: configure | Stage /etc/redis/redis.conf", False),
        (
            "redis: configure | Check /etc/redis/redis.conf with "
            "/usr/local/lib/citadel/redis-checkconf",
            True,
        ),
        ("redis: configure | Write /etc/redis/redis.conf", False),
        ("redis: configure | Write /etc/citadel/redis/password", False),
        ("redis: configure | Write /etc/citadel/redis/backup.env", False),
        ("redis: configure | Stage /usr/local/sbin/citadel-redis-backup", False),
        ("redis: configure | Check /usr/local/sbin/citadel-redis-backup with bash", True),
        ("redis: configure | Write /usr/local/sbin/citadel-redis-backup", False),
        ("redis: configure | Stage /usr/local/sbin/citadel-redis-restore", False),
        ("redis: configure | Check /usr/local/sbin/citadel-redis-restore with bash", True),
        ("redis: configure | Write /usr/local/sbin/citadel-redis-restore", False),
        ("redis: configure | Write /etc/systemd/system/citadel-redis-backup.service", False),
        ("redis: configure | Stage /etc/systemd/system/citadel-redis-backup.timer", False),
        (
            "redis: configure | Check /etc/systemd/system/citadel-redis-backup.timer with "
            "systemd-analyze",
            True,
        ),
        ("redis: configure | Write /etc/systemd/system/citadel-redis-backup.timer", False),
        ("redis: activate | Restart redis-server (config changed)", True),
        ("redis: activate | Run redis-server", False),
        # The users changed without a (re)start: ACL LOAD, no restart (a rotated password).
        (
            "redis: activate | Load /etc/redis/users.acl into redis-server "
            "(ACL LOAD: users changed)",
            True,
        ),
        ("redis: activate | redis: backup directory /var/backups/citadel/redis", False),
        ("redis: activate | Reload systemd units (citadel-redis-backup)", True),
        ("redis: activate | Run citadel-redis-backup.timer (redis.backup.schedule)", False),
        # No snapshot yet (no last-success): the first one runs once, then the timer's.
        ("redis: activate | redis: first Redis snapshot (none yet; the timer takes over)", False),
    ],
    "redis_exporter": [
        ("redis_exporter: install | Install prometheus-redis-exporter", False),
        ("redis_exporter: configure | Write /etc/default/prometheus-redis-exporter", False),
        *dropin("redis_exporter", "prometheus-redis-exporter"),
        ("redis_exporter: activate | Restart prometheus-redis-exporter (config changed)", True),
        ("redis_exporter: activate | Run prometheus-redis-exporter", False),
    ],
    "postgres_exporter": [
        ("postgres_exporter: install | Install prometheus-postgres-exporter", False),
        ("postgres_exporter: configure | Write /etc/citadel/postgres/exporter-role.sql", False),
        ("postgres_exporter: configure | Write /etc/default/prometheus-postgres-exporter", False),
        *dropin("postgres_exporter", "prometheus-postgres-exporter"),
        (
            "postgres_exporter: activate | postgres_exporter: login role citadel_monitor "
            "(pg_monitor)",
            False,  # no role yet: drift, applied unconditionally
        ),
        (
            "postgres_exporter: activate | Restart prometheus-postgres-exporter (config changed)",
            True,
        ),
        ("postgres_exporter: activate | Run prometheus-postgres-exporter", False),
    ],
}
MODULES: dict[str, ModuleType] = {
    "node_exporter": node_exporter,
    "redis": redis,
    "redis_exporter": redis_exporter,
    "postgres_exporter": postgres_exporter,
}


@pytest.mark.parametrize("component", sorted(MODULES))
def test_operations_keep_their_names_order_and_conditions(component: str) -> None:
    ctx = h.context("inventory/lab.yml", "data")
    run = h.run(MODULES[component].apply, FACTS, ctx, getattr(ctx.host, component))
    assert [(op.name, op.conditional) for op in run.ops] == EXPECTED[component]


def test_install_lists_the_packages() -> None:
    ctx = h.context("inventory/lab.yml", "data")
    run = h.run(redis.install, FACTS, ctx, ctx.host.redis)
    assert "redis-server" in run.op("Install redis-server").text()
    assert "redis-tools" in run.op("Install redis-server").text()
    run = h.run(node_exporter.install, FACTS, ctx, ctx.host.node_exporter)
    assert "prometheus-node-exporter" in run.op("Install prometheus-node-exporter").text()


def test_a_login_role_in_place_is_reapplied_only_when_its_file_changed() -> None:
    ctx = h.context("inventory/lab.yml", "data")
    cfg = ctx.host.postgres_exporter
    verifier = postgres.scram_sha256(ctx.secret("postgres_exporter_password"), cfg.role)
    in_place = {"roles": {cfg.role: {"password_md5": postgres.verifier_digest(verifier)}}}
    run = h.run(postgres_exporter.apply, {**FACTS, "PostgresState": in_place}, ctx, cfg)
    assert run.op("login role").conditional
    assert run.op("Restart prometheus-postgres-exporter").conditional


def test_components_keep_their_own_operations_across_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two hosts with different components: no operation carries another component's name."""
    monkeypatch.setattr(pyinfra, "is_cli", True)
    inventory = Inventory((["one", "two"], {}))
    state = State(inventory, Config())
    state.current_op_file_number = 0
    state.set_stage(StateStage.Prepare)
    ctx = h.context("inventory/lab.yml", "data")
    plan = {
        "one": ["node_exporter", "redis", "redis_exporter"],
        "two": ["node_exporter", "postgres_exporter", "redis_exporter"],
    }
    with h._fake_facts({**h.BASE_FACTS, **FACTS}), ctx_state.use(state):
        for name, components in plan.items():
            host = inventory.get_host(name)
            with ctx_host.use(host):
                host.init(state)
                for component in components:
                    MODULES[component].apply(ctx, getattr(ctx.host, component))
    for op_hash in state.get_op_order():
        names = state.get_op_meta(op_hash).names
        assert len(names) == 1, f"one operation, several components: {sorted(names)}"
    seen = {n for op_hash in state.get_op_order() for n in state.get_op_meta(op_hash).names}
    for component in {c for cs in plan.values() for c in cs}:
        assert {n for n, _ in EXPECTED[component]} <= seen
