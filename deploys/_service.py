"""Service helpers for deploys: restart on a changed input, wait for a (re)started one to answer,
the activate step of a service whose unit citadel writes (``unit_activate``), and the two whole
deploy shapes: a service Debian packages (``apt_service``) and one whose unit citadel writes
(``unit_service``: the service's data declared once as a ``UnitService``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from citadel.components import ORDER, REGISTRY
from citadel.model.common import ComponentConfig
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import Changes, put_changes, put_files

C = TypeVar("C", bound=ComponentConfig)


def ready_check(service: str, url: str, expect: str | None, timeout_s: int) -> str:
    """One shell command: poll ``url`` until it answers 2xx (and its body contains ``expect``,
    when given), for at most ``timeout_s`` seconds of wall-clock time.

    Gives up early when the unit has crashed and been restarted three more times (a broken install
    fails in seconds, not after the whole timeout). Either way it says which it was, and prints
    the unit's last log lines: a slow start and a crash loop need different fixes.
    """
    restarts = f"systemctl show -p NRestarts --value {service}"
    probe = f"curl -sf --max-time 2 {url}"
    probe += f" | grep -qF '{expect}'" if expect else " -o /dev/null"
    journal = f"journalctl -u {service} -n 60 --no-pager >&2; exit 1"
    return (
        f"n0=$({restarts}); t0=$(date +%s); "
        f"while [ $(($(date +%s) - t0)) -lt {timeout_s} ]; do "
        f"{probe} && exit 0; "
        f'if [ "$({restarts})" -ge $((n0 + 3)) ] 2>/dev/null; then '
        f'echo "{service}: crashed and restarted 3 times while starting, '
        f'after $(($(date +%s) - t0))s" >&2; '
        f"{journal}; fi; "
        "sleep 1; done; "
        f"echo '{service}: {url} not ready within {timeout_s}s' >&2; "
        f"{journal}"
    )


def restart_on_change(
    service: str, changed: Sequence[OperationMeta]
) -> tuple[OperationMeta, OperationMeta]:
    """Restart `service` when one of the files it reads changed; keep it running and enabled.
    Returns the restart and the run operations (whether either changed it)."""
    restarted = systemd.service(
        name=f"Restart {service} (config changed)",
        service=service,
        restarted=True,
        _if=any_changed(*changed),
    )
    started = systemd.service(name=f"Run {service}", service=service, running=True, enabled=True)
    return restarted, started


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
def _own_operations(*position: int) -> Iterator[None]:
    """pyinfra (CLI) identifies an operation by the line numbers of its call stack, across hosts:
    the operations every ``apt_service`` deploy adds come from the same lines here, so two
    components would share one identity (and one merged name) between hosts with different
    components. The component's place in the converge order, as pyinfra's own loop position,
    keeps each one's operations its own and orders them as the converge does."""
    host.loop_position.extend(position)
    try:
        yield
    finally:
        del host.loop_position[len(host.loop_position) - len(position) :]


def restart_or_reload(
    component: str,
    service: str,
    changed: Changes,
    *,
    restart_why: str,
    reload_why: str,
) -> None:
    """Keep ``service`` running; restart it when a file it reads only at start changed (its
    ``FileSpec.on_change`` "restart": its command line's defaults file; "unit": its sandbox
    drop-in), reload it when one it re-reads changed ("reload")."""
    with _own_operations(ORDER.index(component)):
        systemd.service(name=f"Run {service}", service=service, running=True, enabled=True)
        systemd.service(
            name=f"Restart {service} ({restart_why})",
            service=service,
            restarted=True,
            _if=any_changed(*changed.restart, *changed.unit),
        )
        systemd.service(
            name=f"Reload {service} ({reload_why})",
            service=service,
            reloaded=True,
            _if=any_changed(*changed.reload),
        )


def nginx_activate(written: Changes) -> None:
    """nginx restarted when its sandbox drop-in changed (``written.unit``), else reloaded when
    the site changed, and kept running."""
    restarted = systemd.service(
        name="Restart nginx (sandbox changed)",
        service="nginx",
        restarted=True,
        _if=any_changed(*written.unit),
    )
    systemd.service(name="Run nginx", service="nginx", running=True, enabled=True)
    systemd.service(
        name="Reload nginx (site changed, checked with nginx -t)",
        service="nginx",
        reloaded=True,
        _if=lambda: any(op.did_change() for op in written.reload) and not restarted.did_change(),
    )


@dataclass(frozen=True)
class Ready:
    """How a (re)started service shows it is ready: ``url`` answers 2xx (with ``expect`` in its
    body, when given) within ``timeout_s``; ``name`` names the wait operation."""

    name: str
    url: str
    expect: str | None
    timeout_s: int


def unit_activate(
    service: str,
    changed: Changes,
    *,
    units: str,
    restart_why: str,
    ready: Ready,
    installed: Sequence[OperationMeta] = (),
    reload_why: str = "config changed",
    sockets: Sequence[str] = (),
) -> None:
    """The activate step of a service whose unit citadel writes, in this order:

    1. ``Reload systemd units (<units>)`` when a file read at start changed (``changed.restart``:
       the unit, its drop-ins and environment);
    2. ``Restart <service> (<restart_why>)`` when one of those or what was ``installed`` changed;
    3. ``Run <service>``: running and enabled;
    4. ``Reload <service> (<reload_why>)`` when only a re-readable file (``changed.reload``)
       changed (not when the service was restarted or started anyway; absent when it has none);
    5. ``ready.name``: wait until it answers (``ready_check``), only after any of that.

    With ``sockets`` (socket activation: systemd holds the listening sockets, so a restart
    refuses no connection) those run and are enabled before the service; a changed socket unit
    (``changed.relisten``) stops the service and re-creates its sockets first.
    """
    relisten = changed.relisten
    systemd.daemon_reload(
        name=f"Reload systemd units ({units})", _if=any_changed(*changed.restart, *relisten)
    )
    for socket in sockets:
        if relisten:
            systemd.service(
                name=f"Stop {service} (its socket changed)",
                service=service,
                running=False,
                _if=any_changed(*relisten),
            )
            systemd.service(
                name=f"Restart {socket} (its unit changed)",
                service=socket,
                running=True,
                restarted=True,
                _if=any_changed(*relisten),
            )
        systemd.service(name=f"Run {socket}", service=socket, running=True, enabled=True)
    restarted = systemd.service(
        name=f"Restart {service} ({restart_why})",
        service=service,
        restarted=True,
        _if=any_changed(*changed.restart, *changed.unit, *relisten, *installed),
    )
    started = systemd.service(name=f"Run {service}", service=service, running=True, enabled=True)
    reload = changed.reload
    if reload:
        systemd.service(
            name=f"Reload {service} ({reload_why})",
            service=service,
            reloaded=True,
            _if=lambda: (
                any(op.did_change() for op in reload)
                and not restarted.did_change()
                and not started.did_change()
            ),
        )
    server.shell(
        name=ready.name,
        commands=[ready_check(service, ready.url, ready.expect, ready.timeout_s)],
        _if=any_changed(restarted, started, *reload),
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


@dataclass(frozen=True)
class UnitService(Generic[C]):
    """The data of a service whose unit citadel writes, declared once by its deploy module:
    ``component`` (its inventory section), ``service`` (the systemd unit), ``units`` (names the
    daemon-reload), why it restarts (a unit, environment or ``install`` change) and reloads
    (``reload_why``: a re-readable file changed), how it shows it is ready (``ready(ctx, cfg)``),
    and ``deploy``, its deploy module's name where that is not the component's (the model
    section's engines)."""

    component: str
    service: str
    units: str
    restart_why: str
    ready: Callable[[DeployContext, C], Ready]
    reload_why: str = "config changed"
    deploy: str | None = None
    sockets: tuple[str, ...] = ()  # its socket units (socket activation: unit_activate)

    @property
    def name(self) -> str:
        return self.deploy or self.component

    def position(self) -> tuple[int, int]:
        """Its place in the converge order, then among its component's deploy modules."""
        deploys = REGISTRY[self.component].deploy_names
        return ORDER.index(self.component), deploys.index(self.name)


class UnitDeploy(NamedTuple, Generic[C]):
    """A component's deploy: ``install, configure, activate, apply = unit_service(...)``."""

    install: Callable[[DeployContext, C], list[OperationMeta]]
    configure: Callable[[DeployContext, C], Changes]
    activate: Callable[[DeployContext, C, Changes, list[OperationMeta]], None]
    apply: Callable[[DeployContext, C], Changes]


def unit_service(
    spec: UnitService[C],
    install: Callable[[DeployContext, C], list[OperationMeta]],
    configure: Callable[[DeployContext, C], Changes] | None = None,
) -> UnitDeploy[C]:
    """The deploy of a service whose unit citadel writes: ``install`` (the module's own: returns
    the operations whose change restarts the service), ``configure`` (default: write the
    component's files, ``put_changes``), then ``unit_activate`` with ``spec``'s data. The deploys
    are named ``<deploy>: install`` / ``configure`` / ``activate``; ``apply`` runs the three and
    returns the written files' ``Changes`` (for a step after it, such as Ollama's models).

    Every operation is made from these lines for every such service, so each one's operations
    carry the service's own place (``UnitService.position``, see ``_own_operations``).
    """
    position = spec.position()

    def write(ctx: DeployContext, cfg: C) -> Changes:
        return put_changes(ctx.files(spec.component))

    configure_body = configure or write

    @deploy(f"{spec.name}: install")
    def install_(ctx: DeployContext, cfg: C) -> list[OperationMeta]:
        with _own_operations(*position):
            return install(ctx, cfg)

    @deploy(f"{spec.name}: configure")
    def configure_(ctx: DeployContext, cfg: C) -> Changes:
        with _own_operations(*position):
            return configure_body(ctx, cfg)

    @deploy(f"{spec.name}: activate")
    def activate_(
        ctx: DeployContext, cfg: C, changed: Changes, installed: list[OperationMeta]
    ) -> None:
        with _own_operations(*position):
            unit_activate(
                spec.service,
                changed,
                units=spec.units,
                restart_why=spec.restart_why,
                reload_why=spec.reload_why,
                installed=installed,
                ready=spec.ready(ctx, cfg),
                sockets=spec.sockets,
            )

    def apply(ctx: DeployContext, cfg: C) -> Changes:
        installed = install_(ctx, cfg)
        changed = configure_(ctx, cfg)
        activate_(ctx, cfg, changed, installed)
        return changed

    return UnitDeploy(install_, configure_, activate_, apply)
