"""The base role installs in one apt transaction: base packages, nftables, the node exporter."""

from __future__ import annotations

import deploy_harness as h

from deploys import base


def _install(host: str) -> h.Run:
    ctx = h.context("inventory/lab.yml", host)
    return h.run(base.install, {"LinuxDistribution": h.DISTROS["debian13"]}, ctx, ctx.host.base)


def test_base_role_packages_install_in_the_base_transaction() -> None:
    run = _install("data")
    install = run.op("Install base packages").text()
    assert "nftables" in install
    assert "prometheus-node-exporter" in install
    # one apt-get install for all of them
    assert install.count("apt-get") == 1


def test_a_skipped_base_component_brings_no_package() -> None:
    ctx = h.context("inventory/lab.yml", "data")
    skipped = ctx.host.node_exporter.model_copy(update={"skip": "declared: not wanted here"})
    ctx.host = ctx.host.model_copy(update={"node_exporter": skipped})
    assert "prometheus-node-exporter" not in base.base_role_packages(ctx)
    assert "nftables" in base.base_role_packages(ctx)
