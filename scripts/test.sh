#!/usr/bin/env bash
# `make test`: lint, types, then every test layer but bench. The lab (e2e) runs when this is
# root with systemd-nspawn available (CI is); elsewhere it is skipped with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PATHS=(citadel deploys deploy.py inventory services tests bench)

echo "== ruff"
"$VENV/bin/ruff" check "${PATHS[@]}"
"$VENV/bin/ruff" format --check "${PATHS[@]}"
echo "== mypy"
"$VENV/bin/mypy" citadel deploys services/gateway/citadel_gateway services/gpu_exporter/citadel_gpu_exporter
echo "== pytest"
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
