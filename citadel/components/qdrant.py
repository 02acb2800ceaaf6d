"""Qdrant vector database from its pinned release artifact (pins.yml, sha256, controller cache);
collection snapshots through its API on a timer (qdrant.backup) and a restore command.

Pure model code: files, install paths, the extract command, and the collection plan; the deploy
(deploys/qdrant.py) fetches the artifact through citadel.artifacts and runs the operations.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from citadel.components.prometheus import QDRANT_KEY_FILE
from citadel.model.backup import (
    LAST_SUCCESS,
    BackupSettings,
    Calendar,
    Target,
    Unit,
    textfile_directory,
    unit_files,
)
from citadel.model.common import ComponentConfig, Port, PortNumber, StrictModel
from citadel.model.component import Component, Scrape
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.render import HostView

USER = "qdrant"
HOME = "/var/lib/qdrant"
CONFIG = "/etc/qdrant/config.yaml"
API_KEY_HEADER = "/etc/qdrant/api-key.header"
UNIT = "/etc/systemd/system/qdrant.service"
BINARY_LINK = "/usr/local/bin/qdrant"
SERVICE = "qdrant"

# Snapshots (qdrant.backup): the scripts, their settings, the systemd units. The API key reaches
# the backup as the unit's credential (the header file, root 0600), never a command line.
BACKUP_ENV = "/etc/citadel/qdrant/backup.env"
BACKUP_SCRIPT = "/usr/local/sbin/citadel-qdrant-backup"
RESTORE_SCRIPT = "/usr/local/sbin/citadel-qdrant-restore"
SNAPSHOTS_TEMPLATE = "qdrant/citadel-qdrant-snapshots.py.j2"
METRIC_FILE = "citadel_backup_qdrant.prom"
KEY_CREDENTIAL = "api_key_header"
BACKUP = Unit(
    name="citadel-qdrant-backup",
    script=BACKUP_SCRIPT,
    user=USER,
    server=SERVICE,
    description="Qdrant collection snapshots (through its API), their checks and retention",
    setting="qdrant.backup.schedule",
    families="AF_UNIX AF_INET AF_INET6",
    credentials=((KEY_CREDENTIAL, API_KEY_HEADER),),
)
# A Python script's syntax, checked by the host's python3 before it goes live.
PYTHON_SYNTAX = "python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' {path}"


class Collection(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    # The vector size: left out, the embeddings model's dimension (citadel.model.cluster).
    size: int = Field(default=4096, ge=1, le=65536)
    distance: Literal["Cosine", "Euclid", "Dot", "Manhattan"] = "Cosine"


class Backup(BackupSettings):
    """Every collection's snapshot (POST /collections/{name}/snapshots), downloaded under
    `target` (<UTC stamp>/<collection>.snapshot + .sha256) and checked against the size and
    sha256 Qdrant reports, then deleted on the server; the newest `keep_snapshots` kept."""

    DATA_DIRS: ClassVar[tuple[str, ...]] = (HOME,)
    KIND: ClassVar[str] = "qdrant_snapshot"
    ALERT: ClassVar[str] = "QdrantBackupStale"
    WHAT: ClassVar[str] = "Qdrant snapshot"

    target: Target = "/var/backups/citadel/qdrant"
    schedule: Calendar = "*-*-* 03:00:00"
    keep_snapshots: int = Field(default=7, ge=1, le=365)


class Config(ComponentConfig):
    version: str = "1.18.2"
    http_port: PortNumber = 6333
    grpc_port: PortNumber = 6334
    storage_path: str = "/var/lib/qdrant/storage"
    snapshots_path: str = "/var/lib/qdrant/snapshots"
    collections: list[Collection] = Field(default_factory=list)
    allowed_clients: list[str] = Field(default_factory=lambda: ["gateway"])
    max_open_files: int = Field(default=65536, ge=1024)
    backup: Backup = Backup()

    def ports(self) -> list[Port]:
        clients = (*self.allowed_clients, "monitoring")
        return [
            Port(
                service="qdrant_http",
                number=self.http_port,
                clients=clients,
                field="allowed_clients",
            ),
            Port(
                service="qdrant_grpc",
                number=self.grpc_port,
                clients=tuple(self.allowed_clients),
                field="allowed_clients",
            ),
        ]

    def secrets(self) -> list[str]:
        return ["qdrant_api_key"]

    def references(self) -> dict[str, list[str]]:
        return {"allowed_clients": self.allowed_clients}


# -- install ----------------------------------------------------------------------------------


def install_dir(cfg: Config) -> str:
    """One directory per version: an upgrade is a new directory and a link switch."""
    return f"/opt/qdrant/{cfg.version}"


def extract_command(tarball: str, dest_dir: str) -> str:
    """Unpack the release's single `qdrant` binary from the pushed tarball."""
    return (
        f"tar -xzf {shlex.quote(tarball)} -C {shlex.quote(dest_dir)} qdrant && "
        f"chmod 0755 {shlex.quote(dest_dir)}/qdrant"
    )


def base_url(address: str, cfg: Config) -> str:
    return f"http://{address}:{cfg.http_port}"


# -- collections ------------------------------------------------------------------------------


def parse_collection(body: str) -> dict[str, Any] | None:
    """GET /collections/<name> -> {"size", "distance"}; None when it does not exist."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    try:
        vectors = data["result"]["config"]["params"]["vectors"]
    except (KeyError, TypeError):
        return None
    return {"size": vectors.get("size"), "distance": vectors.get("distance")}


def collections_command(url: str, names: list[str]) -> str:
    """Read each named collection (one line: name + its JSON); the key comes from the header
    file. Used by the deploy's QdrantCollections fact."""
    loop = " ".join(shlex.quote(n) for n in names) or "''"
    return (
        f"for n in {loop}; do printf '%s ' \"$n\"; "
        f"curl -s --max-time 5 -H @{API_KEY_HEADER} {url}/collections/$n "
        "2>/dev/null | tr -d '\\n'; echo; done"
    )


def parse_collections(output: list[str]) -> dict[str, dict[str, Any] | None]:
    found: dict[str, dict[str, Any] | None] = {}
    for line in output:
        name, _, body = line.strip().partition(" ")
        if name:
            found[name] = parse_collection(body)
    return found


def collection_plan(
    wanted: list[Collection], existing: dict[str, dict[str, Any] | None]
) -> tuple[list[Collection], list[str]]:
    """(collections to create, conflicts): an existing collection is never dropped or changed."""
    create: list[Collection] = []
    conflicts: list[str] = []
    for c in wanted:
        have = existing.get(c.name)
        if have is None:
            create.append(c)
        elif (have.get("size"), have.get("distance")) != (c.size, c.distance):
            conflicts.append(
                f"collection {c.name} exists with size {have.get('size')} / "
                f"{have.get('distance')}, the model says {c.size} / {c.distance}"
            )
    return create, conflicts


def create_body(c: Collection) -> str:
    return json.dumps({"vectors": {"size": c.size, "distance": c.distance}}, sort_keys=True)


def wait_ready_command(url: str, seconds: int = 60) -> str:
    return (
        f"i=0; until curl -sf -o /dev/null {url}/readyz; do i=$((i+1)); "
        f'[ "$i" -ge {seconds} ] && {{ echo "qdrant not ready after {seconds}s" >&2; exit 1; }}; '
        "sleep 1; done"
    )


def create_command(url: str, c: Collection) -> str:
    """Idempotent at execution too: PUT only when GET says the collection is missing. The API key
    comes from a header file (curl -H @file), never from the command line."""
    target = f"{url}/collections/{c.name}"
    return (
        f"{wait_ready_command(url)}; "
        f"curl -sf -o /dev/null -H @{API_KEY_HEADER} {target} || "
        f"curl -sf -X PUT -H @{API_KEY_HEADER} -H 'Content-Type: application/json' "
        f"{target} -d {shlex.quote(create_body(c))}"
    )


# -- files ------------------------------------------------------------------------------------


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    return [
        FileSpec(
            dest=CONFIG,
            template="qdrant/config.yaml.j2",
            mode="0640",
            group=USER,
            secret=True,
        ),
        FileSpec(
            dest=API_KEY_HEADER,
            template="qdrant/api-key.header.j2",
            mode="0600",
            secret=True,
        ),
        FileSpec(dest=UNIT, template="qdrant/qdrant.service.j2"),
        *backup_files(view, cfg),
    ]


def backup_files(view: HostView, cfg: Config) -> list[FileSpec]:
    """The snapshot and restore scripts (one Python program, two names), their settings and the
    timer. qdrant reads none of them: a change restarts nothing (on_change "none")."""
    if not cfg.backup.enabled:
        return []
    common = {"env_file": BACKUP_ENV, "last_success": LAST_SUCCESS, "metric_file": METRIC_FILE}
    return [
        FileSpec(
            dest=BACKUP_ENV,
            template="qdrant/backup.env.j2",
            on_change="none",
            extra={
                "url": base_url(str(view.host.address), cfg),
                "key_file": API_KEY_HEADER,
                "textfile_dir": textfile_directory(view),
            },
        ),
        *(
            FileSpec(
                dest=dest,
                template=SNAPSHOTS_TEMPLATE,
                mode="0755",
                validate=PYTHON_SYNTAX,
                on_change="none",
                extra={**common, "program": dest.rsplit("/", 1)[1], "credential": KEY_CREDENTIAL},
            )
            for dest in (BACKUP_SCRIPT, RESTORE_SCRIPT)
        ),
        *unit_files(BACKUP, cfg.backup),
    ]


COMPONENT = Component(
    name="qdrant",
    config=Config,
    role="qdrant",
    files=files,
    # Prometheus reads /metrics with the API key (Qdrant's metrics sit behind it).
    scrape=lambda cfg, host: Scrape(f"{host.address}:{cfg.http_port}", bearer_file=QDRANT_KEY_FILE),
    artifact=lambda cfg: ("qdrant", str(cfg.version)),
)
