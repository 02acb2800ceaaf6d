"""The typed inventory: one `Cluster`, validated once before anything connects."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Literal, TypeAlias

from pydantic import Field, model_validator

from citadel import components as comp
from citadel.components import BASE_ROLE, ORDER, ROLE_COMPONENTS
from citadel.model.common import ADMINS, ANY, ComponentConfig, Name, Port, PortNumber, StrictModel

# The roles the registry's components are brought by (base aside; held to it by a test).
Role = Literal["gpu", "model", "postgres", "redis", "qdrant", "gateway", "monitoring", "webui"]

# The operating systems citadel converges (what a host runs; the lab boots each as its own base
# tree). Debian 13 has pgvector and a current stack; Debian 12 has Python 3.11, which vLLM's and
# OpenWebUI's CPU builds need where no Python 3.13 build of CPU torch can be had.
Distribution = Literal["debian-12", "debian-13"]
DEBIAN_SUITES: dict[str, str] = {"debian-12": "bookworm", "debian-13": "trixie"}


Client: TypeAlias = IPv4Address | IPv4Network


def client_network(ref: str) -> IPv4Network | None:
    """``10.1.2.3`` or ``10.1.0.0/16`` as a network; ``None`` for a host or role name."""
    if not ref[:1].isdigit():
        return None
    try:
        return IPv4Network(ref, strict=True)
    except ValueError:
        return None


def network_problem(ref: str) -> str | None:
    try:
        IPv4Network(ref, strict=True)
    except ValueError as exc:
        return f"{ref!r} is not an IPv4 address or CIDR block: {exc}"
    return None


EMBEDDING_DIMENSION_DEFAULT = comp.model_server.Config.model_fields["embedding_dimension"].default


def _with_vector_size(host: Any, dim: int) -> Any:
    """A raw host whose pgvector dimension and Qdrant collection sizes default to ``dim``."""
    if not isinstance(host, dict):
        return host
    out = dict(host)
    pg = out.get("postgres")
    if isinstance(pg, dict) and "embedding_dimension" not in pg:
        out["postgres"] = {**pg, "embedding_dimension": dim}
    qd = out.get("qdrant")
    if isinstance(qd, dict) and isinstance(qd.get("collections"), list):
        sized = [
            {**c, "size": dim} if isinstance(c, dict) and "size" not in c else c
            for c in qd["collections"]
        ]
        out["qdrant"] = {**qd, "collections": sized}
    return out


class ClusterMeta(StrictModel):
    name: Name
    environment: Literal["production", "staging", "dev", "lab"]
    subnet: IPv4Network


class SshSettings(StrictModel):
    user: str = "root"
    port: PortNumber = 22
    key_file: str | None = None
    known_hosts_file: str | None = None
    strict_host_key_checking: bool = True


class Artifacts(StrictModel):
    """Where pinned artifacts come from: their upstream URL, or a mirror holding the same files."""

    mirror: str | None = None
    cache_dir: str = "/var/cache/citadel/artifacts"


class Host(StrictModel):
    name: Name
    address: IPv4Address
    roles: list[Role] = Field(default_factory=list)
    distribution: Distribution = "debian-13"
    # One section per component the host's roles bring (group data merged with host values):
    # exactly citadel.components.COMPONENTS, in its order (tests/unit/test_components_registry.py).
    base: comp.base.Config = comp.base.Config()
    firewall: comp.firewall.Config = comp.firewall.Config()
    node_exporter: comp.node_exporter.Config = comp.node_exporter.Config()
    nvidia: comp.nvidia.Config | None = None
    gpu_exporter: comp.gpu_exporter.Config | None = None
    model: comp.model_server.Config | None = None
    postgres: comp.postgres.Config | None = None
    postgres_exporter: comp.postgres_exporter.Config | None = None
    redis: comp.redis.Config | None = None
    redis_exporter: comp.redis_exporter.Config | None = None
    qdrant: comp.qdrant.Config | None = None
    gateway: comp.gateway.Config | None = None
    edge_tls: comp.edge_tls.Config | None = None
    alertmanager: comp.alertmanager.Config | None = None
    prometheus: comp.prometheus.Config | None = None
    grafana: comp.grafana.Config | None = None
    webui: comp.webui.Config | None = None

    @property
    def all_roles(self) -> list[str]:
        return [BASE_ROLE, *self.roles]

    def sections(self) -> Iterator[tuple[str, ComponentConfig]]:
        """Every component section this host carries, skipped ones included, in converge order."""
        wanted = {s for role in self.all_roles for s in ROLE_COMPONENTS[role]}
        for section in ORDER:
            config = getattr(self, section)
            if section in wanted and config is not None:
                yield section, config

    def components(self) -> Iterator[tuple[str, ComponentConfig]]:
        """The component sections that converge on this host (not skipped)."""
        return ((s, c) for s, c in self.sections() if c.skip is None)

    def ports(self) -> list[tuple[str, Port]]:
        return [(s, p) for s, c in self.components() for p in c.ports()]


class Cluster(StrictModel):
    cluster: ClusterMeta
    ssh: SshSettings = SshSettings()
    artifacts: Artifacts = Artifacts()
    secrets_file: str | None = None
    hosts: list[Host] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _vector_sizes_from_the_embeddings_model(cls, data: Any) -> Any:
        """pgvector's columns and Qdrant's collections hold the embeddings model's vectors: where
        the inventory leaves their size out, it is that model's dimension (one number, declared
        once, on the model). A size that is set must agree with it (:meth:`check`)."""
        if not isinstance(data, dict) or not isinstance(data.get("hosts"), list):
            return data
        dims = {
            model.get("embedding_dimension", EMBEDDING_DIMENSION_DEFAULT)
            for h in data["hosts"]
            if isinstance(h, dict)
            and isinstance(model := h.get("model"), dict)
            and model.get("api") == "embeddings"
        }
        if len(dims) != 1:
            return data  # no embeddings model (the sections' own defaults), or a conflict
        (dim,) = dims
        return {**data, "hosts": [_with_vector_size(h, dim) for h in data["hosts"]]}

    # -- lookups ----------------------------------------------------------------------------
    def host(self, name_or_address: str) -> Host:
        for h in self.hosts:
            if name_or_address in (h.name, str(h.address)):
                return h
        known = ", ".join(h.name for h in self.hosts)
        raise KeyError(f"no host {name_or_address!r} in the inventory (hosts: {known})")

    def with_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if role in h.all_roles]

    def resolve(self, ref: str) -> list[Host]:
        """A reference names a host or a role; resolve it to hosts (empty when unknown)."""
        by_name = [h for h in self.hosts if h.name == ref]
        return by_name or self.with_role(ref)

    def is_known_ref(self, ref: str) -> bool:
        return any(h.name == ref for h in self.hosts) or ref in ROLE_COMPONENTS or ref == ADMINS

    def model_hosts(self, api: str | None = None) -> list[Host]:
        return [
            h
            for h in self.with_role("model")
            if h.model is not None and (api is None or h.model.api == api)
        ]

    def port_clients(self, host: Host, port: Port) -> list[Client] | Literal["any", "admins"]:
        """Addresses (and CIDR blocks) allowed to reach a port; the firewall opens exactly these.

        A client reference is a host name, a role, an IPv4 address / CIDR block (engineers'
        workstations, a CI runner's network: clients outside the inventory), or "admins" among
        them: the host's admin networks (firewall.admin_networks)."""
        if port.clients == ANY or port.clients == ADMINS:
            return port.clients
        seen: dict[Client, None] = {}
        for ref in port.clients:
            if ref == ADMINS:
                for admin_net in host.firewall.admin_networks:
                    seen[admin_net] = None
                continue
            net = client_network(ref)
            if net is not None:
                seen[net.network_address if net.prefixlen == 32 else net] = None
                continue
            for h in self.resolve(ref):
                if h.name != host.name:
                    seen[h.address] = None
        return list(seen)

    def required_secrets(self, host: Host) -> dict[str, str]:
        """Secret name -> the component on this host that uses it."""
        needed: dict[str, str] = {}
        for section, config in host.components():
            for name in config.secrets():
                needed.setdefault(name, section)
        if (
            host.gateway
            and host.gateway.skip is None
            and any(h.model and h.model.engine == "vllm" for h in self.model_hosts())
        ):
            needed.setdefault("model_api_key", "gateway")
        if (
            host.gateway
            and host.gateway.skip is None
            and any(h.webui and h.webui.skip is None for h in self.with_role("webui"))
        ):
            needed.setdefault("webui_gateway_token", "gateway")  # OpenWebUI's service token
        return needed

    # -- cross-field rules --------------------------------------------------------------------
    def check(self) -> list[tuple[str, str]]:
        """Rules no single field can check. Returns (dotted path, problem) pairs."""
        problems: list[tuple[str, str]] = []
        problems += self._check_unique_hosts()
        problems += self._check_ports()
        problems += self._check_references()
        problems += self._check_roles()
        problems += self._check_vector_sizes()
        return problems

    def _check_vector_sizes(self) -> list[tuple[str, str]]:
        embedders = self.model_hosts("embeddings")
        dims = {h.model.embedding_dimension for h in embedders if h.model}
        out: list[tuple[str, str]] = []
        if len(dims) > 1:
            for h in embedders:
                i = self.hosts.index(h)
                out.append(
                    (
                        f"hosts[{i}].model.embedding_dimension",
                        f"embeddings models disagree on their dimension ({sorted(dims)}): "
                        "pgvector and Qdrant store one size",
                    )
                )
            return out
        if not dims:
            return out
        (dim,) = dims
        for i, h in enumerate(self.hosts):
            if h.postgres and h.postgres.embedding_dimension != dim:
                out.append(
                    (
                        f"hosts[{i}].postgres.embedding_dimension",
                        f"{h.postgres.embedding_dimension} differs from the embeddings model's "
                        f"dimension {dim} (leave it out to follow the model)",
                    )
                )
            for j, c in enumerate(h.qdrant.collections if h.qdrant else []):
                if c.size != dim:
                    out.append(
                        (
                            f"hosts[{i}].qdrant.collections[{j}].size",
                            f"{c.size} differs from the embeddings model's dimension {dim} "
                            "(leave it out to follow the model)",
                        )
                    )
        return out

    def _check_unique_hosts(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        first_name: dict[str, int] = {}
        first_addr: dict[IPv4Address, int] = {}
        subnet = self.cluster.subnet
        for i, h in enumerate(self.hosts):
            if h.name in first_name:
                out.append((f"hosts[{i}].name", f"duplicate of hosts[{first_name[h.name]}]"))
            first_name.setdefault(h.name, i)
            if h.address in first_addr:
                out.append((f"hosts[{i}].address", f"duplicate of hosts[{first_addr[h.address]}]"))
            first_addr.setdefault(h.address, i)
            if h.address not in subnet:
                out.append(
                    (f"hosts[{i}].address", f"{h.address} is outside cluster.subnet {subnet}")
                )
            elif h.address in (subnet.network_address, subnet.broadcast_address):
                out.append(
                    (f"hosts[{i}].address", f"{h.address} is not a host address of {subnet}")
                )
        return out

    def _check_ports(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for i, h in enumerate(self.hosts):
            used: dict[tuple[str, int], str] = {}
            for section, port in h.ports():
                key = (port.proto, port.number)
                if key in used:
                    out.append(
                        (
                            f"hosts[{i}].{section}.{port.field or 'port'}",
                            f"port {port.number}/{port.proto} of {port.service} is already used by "
                            f"{used[key]} on {h.name}",
                        )
                    )
                else:
                    used[key] = port.service
        return out

    def _check_references(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for i, h in enumerate(self.hosts):
            for section, config in h.components():
                for field, refs in config.references().items():
                    for j, ref in enumerate(refs):
                        if ref[:1].isdigit():
                            problem = network_problem(ref)
                            if problem:
                                out.append((f"hosts[{i}].{section}.{field}[{j}]", problem))
                            continue
                        if not self.is_known_ref(ref):
                            out.append(
                                (
                                    f"hosts[{i}].{section}.{field}[{j}]",
                                    f"{ref!r} is neither a host, a role of this inventory nor "
                                    "an IPv4 address or CIDR block",
                                )
                            )
        return out

    def _check_roles(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        served: dict[str, tuple[int, str]] = {}
        for i, h in enumerate(self.hosts):
            if h.model is not None:
                prev = served.get(h.model.served_name)
                if prev and prev[1] != h.model.api:
                    out.append(
                        (
                            f"hosts[{i}].model.api",
                            f"{h.model.served_name} is served as {prev[1]} by hosts[{prev[0]}]",
                        )
                    )
                served.setdefault(h.model.served_name, (i, h.model.api))
            if h.gateway is not None:
                auth = h.gateway.auth
                if (auth.jwks_url is None) == (auth.public_key_file is None):
                    out.append(
                        (
                            f"hosts[{i}].gateway.auth",
                            "set exactly one of jwks_url and public_key_file",
                        )
                    )
                if h.gateway.skip is None and not self.model_hosts():
                    out.append(
                        (f"hosts[{i}].roles", "a gateway needs at least one host with role model")
                    )
            if h.firewall.skip is None and not h.firewall.admin_networks:
                out.append(
                    (
                        f"hosts[{i}].firewall.admin_networks",
                        "empty: the firewall would close SSH to everyone",
                    )
                )
        return out
