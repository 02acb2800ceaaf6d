"""NVIDIA deploy: the plan per distribution, preflight stops, the reboot table, the commands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import deploy_harness as h
import pytest

from citadel import artifacts
from citadel.components.nvidia import (
    BLACKLIST_FILE,
    KEY_3BF863CC,
    KEY_8793F200,
    PIN_FILE,
    REPO_KEYRING,
    REPO_SOURCES,
    Config,
)
from citadel.render import render_host
from deploys import _nvidia_plan, nvidia
from deploys.facts.gpu import NvidiaPreflight, parse_secure_boot

REPOS = {
    "ubuntu2204": "ubuntu2204",
    "ubuntu2404": "ubuntu2404",
    "debian12": "debian12",
    "debian13": "debian13",
}

PREFLIGHT_OK = {
    "lspci": True,
    "gpus_on_bus": 1,
    "secure_boot": False,
    "kernel": "6.8.0-45-generic",
    "headers": True,
    "loaded": None,
    "installed": {"nvidia-open": None, "cuda-drivers": None},
    "keyring": None,
    "nouveau_loaded": False,
}


def _facts(distro: str, **pre: object) -> nvidia.Facts:
    meta = h.DISTROS[distro]["release_meta"]
    return nvidia.Facts(meta["ID"], meta["VERSION_ID"], "x86_64", {**PREFLIGHT_OK, **pre})


@pytest.mark.parametrize("distro", sorted(h.DISTROS))
def test_plan_per_distribution(distro: str) -> None:
    p = nvidia.plan(_facts(distro), Config())
    assert p.stop is None
    assert p.repo == REPOS[distro] and p.repo_arch == "x86_64"
    assert p.repo_key == (KEY_8793F200 if distro == "debian13" else KEY_3BF863CC)
    assert p.purge_keyring_package is False
    assert p.driver == "nvidia-open"  # ampere -> open kernel modules
    assert p.headers == "linux-headers-6.8.0-45-generic"
    assert p.toolkit is None
    assert p.reboot_now == "none"


@pytest.mark.parametrize(
    ("generation", "modules", "package"),
    [
        ("pascal", "auto", "cuda-drivers"),
        ("volta", "auto", "cuda-drivers"),
        ("turing", "auto", "nvidia-open"),
        ("hopper", "auto", "nvidia-open"),
        ("ampere", "proprietary", "cuda-drivers"),
        ("volta", "open", "nvidia-open"),
    ],
)
def test_open_or_proprietary_modules_by_generation(
    generation: str, modules: str, package: str
) -> None:
    cfg = Config(gpu_generation=generation, kernel_modules=modules)
    assert nvidia.plan(_facts("ubuntu2404"), cfg).driver == package


def test_toolkit_from_the_model() -> None:
    assert (
        nvidia.plan(_facts("debian12"), Config(cuda_toolkit="12.4")).toolkit == "cuda-toolkit-12-4"
    )


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (_facts("debian12", secure_boot=True), "Secure Boot is enabled"),
        (_facts("ubuntu2204", gpus_on_bus=0), "no NVIDIA GPU on the PCI bus"),
        (nvidia.Facts("rocky", "9", "x86_64", PREFLIGHT_OK), "unsupported distribution rocky 9"),
        (nvidia.Facts("ubuntu", "24.04", "ppc64le", PREFLIGHT_OK), "unsupported architecture"),
        (
            nvidia.Facts("debian", "13", "aarch64", PREFLIGHT_OK),
            "NVIDIA publishes no debian13/sbsa CUDA repository",
        ),
    ],
)
def test_preflight_stops(facts: nvidia.Facts, message: str) -> None:
    assert message in (nvidia.plan(facts, Config()).stop or "")


def test_unknown_secure_boot_and_missing_headers_are_notes_not_stops() -> None:
    p = nvidia.plan(_facts("ubuntu2204", secure_boot=None, headers=False), Config())
    assert p.stop is None
    assert any("Secure Boot state unknown" in n for n in p.notes)
    assert any("kernel headers" in n for n in p.notes)


@pytest.mark.parametrize(
    ("loaded", "installed", "policy", "decision"),
    [
        (None, None, "allowed", "none"),
        (None, None, "never", "none"),
        ("550.54.15", "550.54.15-1", "allowed", "none"),
        ("550.54.15", "550.54.15-1", "never", "none"),
        ("550.54.14", "550.54.15-1", "allowed", "reboot"),
        ("550.54.14", "550.54.15-1", "never", "required"),
        (None, "550.54.15-1", "allowed", "reboot"),
        (None, "1:550.54.15-0ubuntu1", "never", "required"),
    ],
)
def test_reboot_decision_table(
    loaded: str | None, installed: str | None, policy: str, decision: str
) -> None:
    assert _nvidia_plan.reboot_decision(loaded, installed, policy) == decision


def test_other_branch_installed_is_an_install_not_a_reboot_now() -> None:
    p = nvidia.plan(
        _facts("ubuntu2204", loaded="535.1.1", installed={"nvidia-open": "535.1.1-1"}), Config()
    )
    assert p.reboot_now == "none"


def _run(distro: str, reboot: str = "never", facts: dict | None = None, **pre: object) -> h.Run:
    ctx = h.context("inventory/production.yml", "llm-chat")
    assert ctx.host.nvidia is not None
    cfg = ctx.host.nvidia.model_copy(update={"reboot": reboot})
    preflight = {**PREFLIGHT_OK, **pre}
    given = {"LinuxDistribution": h.DISTROS[distro], "NvidiaPreflight": preflight, **(facts or {})}
    return h.run(nvidia.apply, given, ctx, cfg)


@pytest.fixture
def keyring(monkeypatch: pytest.MonkeyPatch) -> list:
    """Anything asking the controller for an artifact fails the test: the deploy downloads
    nothing on the controller (the host fetches NVIDIA's key and checks it)."""
    seen: list = []

    def no_controller_download(*args: object, **kwargs: object) -> None:
        seen.append(args)
        raise AssertionError("the nvidia deploy must not download on the controller")

    monkeypatch.setattr(artifacts, "ensure_cached", no_controller_download)
    return seen


KEYS = {"debian13": KEY_8793F200}


@pytest.mark.parametrize("distro", sorted(h.DISTROS))
def test_commands_per_distribution(distro: str, keyring: list) -> None:
    run = _run(distro)
    key = KEYS.get(distro, KEY_3BF863CC)
    repo = f"https://developer.download.nvidia.com/compute/cuda/repos/{REPOS[distro]}/x86_64/"
    fetch = run.op("Fetch NVIDIA's repository key").text()
    assert f"{repo}{key.file}" in fetch and nvidia.STAGED_KEY in fetch
    trust = run.op("Trust NVIDIA's repository key only if its fingerprint is").text()
    assert key.fingerprint in trust and f"-o {REPO_KEYRING}.tmp" in trust
    source = run.op("NVIDIA CUDA apt source").uploads[REPO_SOURCES]
    assert f"URIs: {repo}\n" in source and f"Signed-By: {REPO_KEYRING}\n" in source
    assert "Suites: /\n" in source and "Components" not in source
    assert run.op("Refresh apt (NVIDIA repository key or source changed)").conditional
    assert not run.has("cuda-keyring") and keyring == []
    assert "install linux-headers-6.8.0-45-generic" in run.op("Kernel headers").text()
    assert "install nvidia-open" in run.op("NVIDIA driver 550").text()
    pin = run.op(f"Write {PIN_FILE}")
    assert "Pin: version 550.*" in pin.uploads[PIN_FILE]
    assert "blacklist nouveau" in run.op(f"Write {BLACKLIST_FILE}").uploads[BLACKLIST_FILE]
    # the branch is pinned before any driver package is installed; the key is checked before
    # the source that trusts it is written
    assert (
        run.index(f"Write {PIN_FILE}")
        < run.index("Fetch NVIDIA's repository key")
        < run.index("Trust NVIDIA's repository key")
        < run.index("NVIDIA CUDA apt source")
        < run.index("Refresh apt")
        < run.index("NVIDIA driver")
    )
    assert run.op("Rebuild the initramfs").conditional
    assert (
        run.op("Run nvidia-persistenced").commands[-1]
        == "systemctl enable nvidia-persistenced.service"
    )
    required = run.op("REBOOT REQUIRED if the driver changed")
    assert required.conditional and not run.has("Reboot (")


def test_a_keyring_holding_the_pinned_key_is_not_fetched_again(keyring: list) -> None:
    run = _run(
        "ubuntu2404",
        facts={("KeyringFingerprints", REPO_KEYRING): [KEY_3BF863CC.fingerprint]},
    )
    assert not run.has("Fetch NVIDIA's repository key") and not run.has("Trust NVIDIA's")
    assert run.has("NVIDIA CUDA apt source") and run.op("Refresh apt").conditional


@pytest.mark.parametrize(
    "held", [[], ["0" * 40], [KEY_3BF863CC.fingerprint, "0" * 40], [KEY_3BF863CC.fingerprint]]
)
def test_a_keyring_with_anything_but_exactly_the_pinned_key_is_replaced(held: list) -> None:
    run = _run("debian13", facts={("KeyringFingerprints", REPO_KEYRING): held})
    trust = run.op("Trust NVIDIA's repository key").text()
    assert KEY_8793F200.fingerprint in trust and KEY_3BF863CC.fingerprint not in trust


def test_an_installed_cuda_keyring_package_is_purged_before_the_source(keyring: list) -> None:
    run = _run("debian12", facts={"DebPackages": {"cuda-keyring": {"1.1-1"}}}, keyring="1.1-1")
    purge = run.op("Purge cuda-keyring").text()
    assert "purge" in purge and "cuda-keyring" in purge
    assert run.index("Purge cuda-keyring") < run.index("NVIDIA CUDA apt source")


def test_reboot_allowed_reboots_after_a_driver_change_and_checks_the_branch(keyring: list) -> None:
    run = _run("ubuntu2404", reboot="allowed")
    reboot = run.op("Reboot (the driver was installed or changed in this run)")
    assert reboot.conditional
    assert any("reboot" in c for c in reboot.commands)
    check = run.op("Check the loaded driver after the reboot")
    assert check.conditional and "grep -q ' 550\\.' /proc/driver/nvidia/version" in check.text()


def test_pending_mismatch_reboots_now_or_says_so(keyring: list) -> None:
    pre = {"loaded": "550.54.14", "installed": {"nvidia-open": "550.54.15-1"}}
    allowed = _run("debian12", reboot="allowed", **pre)
    assert not allowed.op("Reboot (the loaded nvidia module differs").conditional
    never = _run("debian12", reboot="never", **pre)
    required = never.op("REBOOT REQUIRED (reboot: never)")
    assert not required.conditional and "<call _required" in required.text()


def test_secure_boot_stop_adds_one_failing_operation_and_nothing_else(keyring: list) -> None:
    run = _run("ubuntu2204", secure_boot=True)
    assert run.names() == ["nvidia: preflight | nvidia preflight failed (nothing was installed)"]
    assert "Secure Boot is enabled" in run.ops[0].text() and run.ops[0].text().endswith("exit 1")


def test_lab_skips_nvidia() -> None:
    ctx = h.context("inventory/lab.yml", "llm-chat")
    assert ctx.host.nvidia is not None and ctx.host.nvidia.skip


# -- facts ---------------------------------------------------------------------------------------


def test_preflight_fact_parses_its_output() -> None:
    out = [
        "gpus=2",
        "secure_boot=SecureBoot disabled",
        "kernel=6.8.0-45-generic",
        "headers=yes",
        "loaded=NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Tue Mar  5 19:58:46 UTC 2024",
        "nouveau=0",
        "pkg nvidia-open=550.54.15-1",
        "pkg cuda-drivers=",
        "pkg cuda-keyring=1.1-1",
    ]
    fact = NvidiaPreflight().process(out)
    assert fact["gpus_on_bus"] == 2 and fact["lspci"] is True
    assert fact["secure_boot"] is False
    assert fact["loaded"] == "550.54.15"
    assert fact["installed"] == {"nvidia-open": "550.54.15-1", "cuda-drivers": None}
    assert fact["keyring"] == "1.1-1"
    no_driver = NvidiaPreflight().process(["gpus=?", "secure_boot=", "loaded=", "headers=no"])
    assert (
        no_driver["lspci"] is False
        and no_driver["loaded"] is None
        and no_driver["headers"] is False
    )


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("SecureBoot enabled", True),
        ("SecureBoot disabled", False),
        ("This system doesn't support Secure Boot", False),
        ("EFI variables are not supported on this system", False),
        ("bash: mokutil: command not found", None),
    ],
)
def test_secure_boot_states(text: str, state: bool | None) -> None:
    assert parse_secure_boot(text) is state


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="needs apt-cache")
def test_pin_file_passes_apt(tmp_path: Path) -> None:
    ctx = h.context("inventory/production.yml", "llm-chat")
    rendered = {f.spec.dest: f for f in render_host(ctx.cluster, ctx.host)}[PIN_FILE]
    candidate = tmp_path / "pin"
    candidate.write_text(rendered.content)
    assert rendered.spec.validate is not None
    check = rendered.spec.validate.format(path=candidate)
    assert subprocess.run(check, shell=True, check=False).returncode == 0
    candidate.write_text(rendered.content.replace("Package:", "Package"))
    assert subprocess.run(check, shell=True, check=False, capture_output=True).returncode != 0


def test_preinstalled_driver_installs_nothing(keyring: list) -> None:
    ctx = h.context("inventory/production.yml", "llm-chat")
    assert ctx.host.nvidia is not None
    cfg = ctx.host.nvidia.model_copy(update={"driver_source": "preinstalled"})
    preflight = {**PREFLIGHT_OK, "loaded": f"{cfg.driver_branch}.54.15"}
    facts = {"LinuxDistribution": h.DISTROS["ubuntu2404"], "NvidiaPreflight": preflight}
    run = h.run(nvidia.apply, facts, ctx, cfg)
    assert run.names() == []
    assert keyring == []


def test_a_foreign_driver_is_one_failing_operation(keyring: list) -> None:
    run = _run("ubuntu2404", loaded="550.54.15")
    assert run.names() == ["nvidia: preflight | nvidia preflight failed (nothing was installed)"]
    assert "is loaded but no package of NVIDIA" in run.ops[0].text()


# -- the key check itself, with a real gpg ----------------------------------------------------


@pytest.fixture(scope="module")
def armored_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, bytes]]:
    """Two throwaway signing keys: name -> (fingerprint, ASCII-armored public key)."""
    if shutil.which("gpg") is None:
        pytest.skip("needs gpg")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = {"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"}
    keys = {}
    for name in ("good", "evil"):
        uid = f"{name} <{name}@example.invalid>"
        subprocess.run(
            ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign"],
            env=env,
            check=True,
            capture_output=True,
        )
        listing = subprocess.run(
            ["gpg", "--batch", "--with-colons", "--list-keys", uid],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        armored = subprocess.run(
            ["gpg", "--batch", "--armor", "--export", fpr], env=env, check=True, capture_output=True
        ).stdout
        keys[name] = (fpr, armored)
    return keys


def _trust(tmp_path: Path, content: bytes, fingerprint: str) -> tuple[int, str, Path]:
    staged, keyring = tmp_path / "key.download", tmp_path / "keyring.gpg"
    staged.write_bytes(content)
    cmd = nvidia.trust_key_command(
        "https://nvidia.example/k.pub", fingerprint, str(staged), str(keyring)
    )
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    done = subprocess.run(
        ["sh", "-c", cmd],
        env={"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert not staged.exists()  # removed whether trusted or not
    return done.returncode, done.stderr, keyring


def test_the_pinned_key_becomes_the_keyring(tmp_path: Path, armored_keys: dict) -> None:
    fpr, armored = armored_keys["good"]
    rc, err, keyring = _trust(tmp_path, armored, fpr)
    assert rc == 0, err
    shown = subprocess.run(
        ["gpg", "--batch", "--show-keys", "--with-colons", str(keyring)],
        env={"GNUPGHOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"fpr:::::::::{fpr}:" in shown
    assert oct(keyring.stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("content", ["evil", "both", "garbage"])
def test_any_other_key_is_refused_and_nothing_is_trusted(
    tmp_path: Path, armored_keys: dict, content: str
) -> None:
    good_fpr, good = armored_keys["good"]
    evil = armored_keys["evil"][1]
    data = {"evil": evil, "both": good + evil, "garbage": b"<html>404</html>"}[content]
    rc, err, keyring = _trust(tmp_path, data, good_fpr)
    assert rc == 1 and "not trusted" in err and good_fpr in err
    assert not keyring.exists() and not Path(f"{keyring}.tmp").exists()
