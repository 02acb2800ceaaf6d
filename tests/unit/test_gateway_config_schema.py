"""One schema for the gateway's config: citadel builds the gateway's own model
(``citadel_gateway.config``), so what the gateway would refuse, ``citadel validate`` refuses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from citadel_gateway.config import GatewayConfig

from citadel.components.gateway import gateway_config
from citadel.errors import InventoryError
from citadel.loader import load_cluster
from citadel.render import HostView, render_host
from citadel.secrets import MaskedSecrets

INVENTORIES = Path(__file__).resolve().parent / "inventories"
CONFIG = "/etc/citadel-gateway/config.yml"


def _with(tmp_path: Path, setting: str) -> Path:
    """tests/unit/inventories/good.yml with one gateway setting overridden."""
    shutil.copy(INVENTORIES / "good.yml", tmp_path / "good.yml")
    shutil.copytree(INVENTORIES / "group_data", tmp_path / "group_data")
    inv = tmp_path / "inv.yml"
    inv.write_text(
        "extends: good.yml\noverrides:\n  - name: case\n    why: the case under test\n"
        f"    set:\n      group_data.gateway.gateway.{setting}\n"
    )
    return inv


@pytest.mark.parametrize(
    ("setting", "problem"),
    [  # citadel accepted each of these; the gateway refused them on the host
        ("cache_ttl_s: 0", "cache_ttl_s: the gateway refuses it: ttl_s:"),
        ("backend_timeout_s: 5000", "less than or equal to 3600"),
        ("rate_limits.health: {per_minute: 2000000, burst: 1}", "less than or equal to 1000000"),
        ("cors.allowed_origins: [http://a.example/path]", "is not an origin"),
        (
            "auth: {jwks_url: ftp://idp.example/jwks, issuers: [t], verify_token_secret: v}",
            "auth: the gateway refuses it: jwks_url:",
        ),
    ],
)
def test_validate_refuses_what_the_gateway_refuses(
    tmp_path: Path, setting: str, problem: str
) -> None:
    inv = _with(tmp_path, setting)
    with pytest.raises(InventoryError, match=problem):
        load_cluster(inv)


@pytest.mark.parametrize("inventory", ["inventory/production.yml", "inventory/lab.yml"])
def test_the_written_file_reads_back_as_the_model_citadel_built(inventory: str) -> None:
    cluster = load_cluster(inventory).cluster
    host = cluster.host("gateway")
    assert host.gateway is not None
    built = gateway_config(HostView(cluster, host, MaskedSecrets()), host.gateway)
    written = next(f.content for f in render_host(cluster, host) if f.spec.dest == CONFIG)
    assert GatewayConfig.model_validate(yaml.safe_load(written)) == built
