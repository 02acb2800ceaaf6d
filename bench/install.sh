#!/usr/bin/env bash
# `make bench`, first step: what bench/gateway.py and bench/converge.py need beyond `make install`.
#   commands (Debian packages): wrk (closed-loop load), taskset/chrt/unshare (util-linux),
#   ip (iproute2), redis-server; bench/converge.py boots a lab of its own and installs the
#   lab's prerequisites itself (citadel.lab.ops.ensure_prereqs).
#   Python: uvloop, aiohttp, pyyaml, cryptography (the gateway's dependencies, installed with
#   `pip install -e services/gateway` by `make install`); LiteLLM is installed, pinned, by
#   bench/gateway.py into bench/.venv-litellm.
# Anything missing that cannot be installed stops here with one line naming it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

declare -A TOOLS=([wrk]=wrk [taskset]=util-linux [chrt]=util-linux [unshare]=util-linux
                  [ip]=iproute2 [redis-server]=redis-server)
missing=()
for cmd in "${!TOOLS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${TOOLS[$cmd]}")
done
if ((${#missing[@]})); then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  if [[ $EUID -ne 0 ]]; then
    echo "bench: missing packages: ${pkgs% } (run make bench as root, or apt-get install them)" >&2
    exit 1
  fi
  echo "bench: installing ${pkgs% }"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi

if ! "$VENV/bin/python" -c 'import uvloop, aiohttp, yaml, cryptography' 2>/dev/null; then
  "$VENV/bin/pip" install -q -e services/gateway
  "$VENV/bin/python" -c 'import uvloop, aiohttp, yaml, cryptography' || {
    echo "bench: the bench's Python modules (uvloop, aiohttp, pyyaml, cryptography) are missing" >&2
    exit 1
  }
fi
