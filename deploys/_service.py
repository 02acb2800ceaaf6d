"""Service helpers for deploys: restart on a changed input, wait for a (re)started one to answer,
and the whole deploy of a service Debian packages (``apt_service``)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, NamedTuple, TypeVar

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from citadel.components import ORDER
from citadel.model.common import ComponentConfig
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files

C = TypeVar("C", bound=ComponentConfig)


def ready_check(service: str, url: str, expect: str | None, timeout_s: int) -> str:
    """One shell command: poll ``url`` (bounded) until it answers 2xx (and its body contains
    ``expect``, when given).

    Gives up early when the unit has crashed and been restarted three more times (a broken install
    fails in seconds, not after the whole timeout), printing the unit's last log lines.
    """
    restarts = f"systemctl show -p NRestarts --value {service}"
    probe = f"curl -sf --max-time 2 {url}"
    probe += f" | grep -qF '{expect}'" if expect else " -o /dev/null"
    return (
        f"n0=$({restarts}); "
        f"for i in $(seq 1 {timeout_s}); do "
        f"{probe} && exit 0; "
        f'[ "$({restarts})" -ge $((n0 + 3)) ] 2>/dev/null && break; '
        "sleep 1; done; "
        f"echo '{service}: {url} not ready within {timeout_s}s' >&2; "
        f"journalctl -u {service} -n 30 --no-pager >&2; exit 1"
    )


def restart_on_change(service: str, changed: Sequence[OperationMeta]) -> None:
    """Restart `service` when one of the files it reads changed; keep it running and enabled."""
    systemd.service(
        name=f"Restart {service} (config changed)",
        service=service,
        restarted=True,
        _if=any_changed(*changed),
    )
    systemd.service(name=f"Run {service}", service=service, running=True, enabled=True)


def system_account(user: str, home: str, dirs: Sequence[str] = (), mode: str = "0755") -> None:
    """A no-login system user and group for a service, and the directories it owns."""
    server.group(name=f"Group {user}", group=user, system=True)
    server.user(
        name=f"User {user}",
        user=user,
        group=user,
        system=True,
        home=home,
        shell="/usr/sbin/nologin",
        create_home=False,
    )
    for path in dirs:
        files.directory(name=f"Directory {path}", path=path, user=user, group=user, mode=mode)


@contextmanager
def _own_operations(position: int) -> Iterator[None]:
    """pyinfra (CLI) identifies an operation by the line numbers of its call stack, across hosts:
    the operations every ``apt_service`` deploy adds come from the same lines here, so two
    components would share one identity (and one merged name) between hosts with different
    components. The component's place in the converge order, as pyinfra's own loop position,
    keeps each one's operations its own and orders them as the converge does."""
    host.loop_position.append(position)
    try:
        yield
    finally:
        host.loop_position.pop()


def restart_or_reload(
    component: str,
    service: str,
    changed: Sequence[OperationMeta],
    dests: Sequence[str],
    *,
    restart_on: Collection[str],
    restart_why: str,
    reload_why: str,
) -> None:
    """Keep ``service`` running; restart it when a file it reads only at start (``restart_on``:
    its command line's defaults file) changed, reload it when any other of its files changed.
    ``changed`` are the file operations, in the order of their destinations ``dests``."""
    at_start = [op for op, dest in zip(changed, dests, strict=True) if dest in restart_on]
    reloadable = [op for op in changed if op not in at_start]
    with _own_operations(ORDER.index(component)):
        systemd.service(name=f"Run {service}", service=service, running=True, enabled=True)
        systemd.service(
            name=f"Restart {service} ({restart_why})",
            service=service,
            restarted=True,
            _if=any_changed(*at_start),
        )
        systemd.service(
            name=f"Reload {service} ({reload_why})",
            service=service,
            reloaded=True,
            _if=any_changed(*reloadable),
        )


class ServiceDeploy(NamedTuple, Generic[C]):
    """A component's deploy: ``install, configure, activate, apply = apt_service(...)``."""

    install: Callable[[DeployContext, C], None]
    configure: Callable[[DeployContext, C], list[OperationMeta]]
    activate: Callable[[DeployContext, C, list[OperationMeta]], None]
    apply: Callable[[DeployContext, C], None]


def apt_service(
    component: str,
    config: type[C],
    service: str,
    packages: Sequence[str] = (),
    activate: Callable[[DeployContext, C, list[OperationMeta]], None] | None = None,
) -> ServiceDeploy[C]:
    """A service from Debian's package: install ``packages`` (default: the one named ``service``),
    write the component's files (``put_files``), then ``activate`` with the file operations
    (default: ``restart_on_change(service, files)``). The deploys are named ``<component>:
    install`` / ``configure`` / ``activate``; operation names are ``Install <service>``,
    ``Restart <service> (config changed)``, ``Run <service>``.
    """
    wanted = list(packages) or [service]
    position = ORDER.index(component)

    def restart(ctx: DeployContext, cfg: C, changed: list[OperationMeta]) -> None:
        restart_on_change(service, changed)

    activate_body = activate or restart

    @deploy(f"{component}: install")
    def install_(ctx: DeployContext, cfg: C) -> None:
        with _own_operations(position):
            apt.packages(name=f"Install {service}", packages=wanted, no_recommends=True)

    @deploy(f"{component}: configure")
    def configure_(ctx: DeployContext, cfg: C) -> list[OperationMeta]:
        with _own_operations(position):
            return put_files(ctx.files(component))

    @deploy(f"{component}: activate")
    def activate_(ctx: DeployContext, cfg: C, changed: list[OperationMeta]) -> None:
        with _own_operations(position):
            activate_body(ctx, cfg, changed)

    def apply(ctx: DeployContext, cfg: C) -> None:
        install_(ctx, cfg)
        activate_(ctx, cfg, configure_(ctx, cfg))

    return ServiceDeploy(install_, configure_, activate_, apply)
