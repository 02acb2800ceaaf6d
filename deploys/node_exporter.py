"""Prometheus node exporter: Debian's package, listening on the host's own address.

The reference component. A service Debian packages is one ``deploys._service.apt_service``
call (install / configure / activate + apply); a component with steps of its own writes the
three ``@deploy`` functions and ``apply`` (see deploys/postgres.py).
"""

from __future__ import annotations

from citadel.components.node_exporter import Config
from deploys._service import apt_service

SERVICE = "prometheus-node-exporter"
# Installed with the base packages in one apt transaction (deploys/base.py); listed here too so
# this component stands alone (then a no-op: the package fact already has it).
PACKAGES = [SERVICE]

install, configure, activate, apply = apt_service("node_exporter", Config, SERVICE, PACKAGES)
