"""The shipped CI pipelines parse, and wire every secret the production inventory needs."""

from __future__ import annotations

from pathlib import Path

import yaml

from citadel.labsecrets import all_secret_names
from citadel.loader import load_cluster


def test_pipelines_parse_and_have_their_stages() -> None:
    gha = yaml.safe_load(Path(".github/workflows/converge.yml").read_text())
    assert set(gha["jobs"]) == {"validate", "plan", "apply"}
    assert gha["jobs"]["apply"]["environment"] == "production"
    gitlab = yaml.safe_load(Path(".gitlab-ci.yml").read_text())
    assert gitlab["apply"]["rules"][0]["when"] == "manual"
    assert gitlab["stages"] == ["validate", "plan", "apply"]


def test_github_workflow_passes_every_production_secret() -> None:
    names = all_secret_names(load_cluster("inventory/production.yml").cluster)
    text = Path(".github/workflows/converge.yml").read_text()
    for name in names:
        assert (
            f"CITADEL_SECRET_{name.upper()}: ${{{{ secrets.CITADEL_SECRET_{name.upper()} }}}}"
            in text
        )
