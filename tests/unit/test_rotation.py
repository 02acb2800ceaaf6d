"""`citadel rotate`: the phases in order, each converging only its hosts, resumable after a
failure, idempotent, refusing what has no zero-downtime procedure before anything changes; the
state file (0600, beside the secrets) and what each stage renders; no value ever printed."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from citadel import cli, rotation
from citadel.components import gateway, redis
from citadel.converge import HostResult
from citadel.devtokens import mint_dev_token
from citadel.errors import CitadelError
from citadel.labsecrets import JWT_KEY, KeyRing, ensure_lab_secrets
from citadel.loader import Loaded, load_cluster
from citadel.render import render_host
from citadel.rotation_state import Entry, RotationState, secrets_state_path
from citadel.secrets import read_secrets_file

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = str(ROOT / "inventory" / "lab.yml")


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lab state of its own: secrets file and JWT key pair, as `citadel lab up` makes them."""
    monkeypatch.setenv("CITADEL_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.delenv("CITADEL_SECRETS_FILE", raising=False)
    for name in list(os.environ):
        if name.startswith("CITADEL_SECRET_"):
            monkeypatch.delenv(name)
    ensure_lab_secrets(load_cluster(INVENTORY).cluster)
    return tmp_path / "lab"


def loaded() -> Loaded:
    return load_cluster(INVENTORY, require_secrets=True)


class Recorder:
    """A converge that records, for each call, its hosts and what they would be rendered with;
    ``fail_at``: the phase whose converge fails (once)."""

    def __init__(self, name: str, fail_at: str | None = None):
        self.name, self.fail_at = name, fail_at
        self.calls: list[tuple[str, list[str], list[str], str]] = []

    def __call__(self, hosts: list[str]) -> bool:
        now = loaded()
        entry = rotation.rotation_for(self.name, now).entry()
        assert entry is not None and not entry.converged  # the state is written first
        store = now.secrets
        self.calls.append((entry.stage, hosts, store.accepted(self.name), store[self.name]))
        if entry.stage == self.fail_at:
            self.fail_at = None
            return False
        return True


def said() -> tuple[list[str], Callable[[str], None]]:
    lines: list[str] = []
    return lines, lines.append


def test_a_rotation_runs_accept_switch_retire_on_only_their_hosts(lab: Path) -> None:
    before = loaded()
    old = before.secrets["redis_password"]
    conv, (lines, say) = Recorder("redis_password"), said()
    rotation.rotate(rotation.rotation_for("redis_password", before), None, conv, say)
    new = read_secrets_file(lab / "secrets.yml")["redis_password"]
    assert new != old
    clients = [
        h.name
        for h in before.cluster.hosts
        if "redis_password" in before.cluster.required_secrets(h)
    ]
    assert "gateway" in clients and "data" in clients
    assert conv.calls == [
        ("accept", ["data"], [new, old], old),  # Redis takes both; clients still send the old
        ("switch", clients, [new, old], new),  # every client moves to the new
        ("retire", ["data"], [new], new),  # the old is refused
    ]
    assert not secrets_state_path(lab / "secrets.yml").exists()
    assert loaded().secrets["redis_password"] == new
    text = "\n".join(lines)
    assert old not in text and new not in text
    # the other secrets are as they were
    others = {
        k: v for k, v in read_secrets_file(lab / "secrets.yml").items() if k != "redis_password"
    }
    assert others == {k: v for k, v in before.secrets.items() if k != "redis_password"}


def test_a_failed_phase_stops_there_and_a_rerun_resumes_it(lab: Path) -> None:
    old = loaded().secrets["redis_password"]
    conv, (_, say) = Recorder("redis_password", fail_at="switch"), said()
    rot = rotation.rotation_for("redis_password", loaded())
    with pytest.raises(CitadelError, match=r"switch failed.*resume"):
        rotation.rotate(rot, None, conv, say)
    entry = rot.entry()
    assert entry is not None and (entry.stage, entry.converged) == ("switch", False)
    new = read_secrets_file(lab / "secrets.yml")["redis_password"]
    assert rotation.describe("redis_password", entry).endswith("--phase switch`")
    rotation.rotate(rotation.rotation_for("redis_password", loaded()), None, conv, say)
    assert [c[0] for c in conv.calls] == ["accept", "switch", "switch", "retire"]
    # resumed with the same new value, the previous one still accepted until retire
    assert conv.calls[2][2] == [new, old]
    assert read_secrets_file(lab / "secrets.yml")["redis_password"] == new


def test_a_crash_between_the_state_and_the_secrets_file_resumes_with_the_old_value_kept(
    lab: Path,
) -> None:
    """The state (with the previous value) is written before the secrets file changes: a crash
    in between leaves the old value in both, and the next run writes the new one."""
    old = loaded().secrets["redis_password"]
    state = RotationState.load(secrets_state_path(lab / "secrets.yml"))
    state.with_entry("redis_password", Entry("accept", previous=old))
    conv, (_, say) = Recorder("redis_password"), said()
    rotation.rotate(rotation.rotation_for("redis_password", loaded()), "accept", conv, say)
    new = read_secrets_file(lab / "secrets.yml")["redis_password"]
    assert new != old and conv.calls == [("accept", ["data"], [new, old], old)]


def test_phases_one_at_a_time_in_order_and_idempotent(lab: Path) -> None:
    conv, (_, say) = Recorder("redis_password"), said()

    def run(phase: Any) -> None:
        rotation.rotate(rotation.rotation_for("redis_password", loaded()), phase, conv, say)

    with pytest.raises(CitadelError, match="next phase is accept, not switch"):
        run("switch")
    run("accept")
    new = read_secrets_file(lab / "secrets.yml")["redis_password"]
    run("accept")  # again: the same new value, the same hosts
    assert read_secrets_file(lab / "secrets.yml")["redis_password"] == new
    with pytest.raises(CitadelError, match="next phase is switch, not retire"):
        run("retire")
    run("switch")
    with pytest.raises(CitadelError, match="next phase is retire, not accept"):
        run("accept")  # never backwards: the clients already use the new value
    run("retire")
    assert [c[0] for c in conv.calls] == ["accept", "accept", "switch", "retire"]
    assert rotation.rotation_for("redis_password", loaded()).entry() is None


def test_the_state_file_is_private_and_never_shows_a_value(lab: Path) -> None:
    old = loaded().secrets["redis_password"]
    conv, (_, say) = Recorder("redis_password"), said()
    rot = rotation.rotation_for("redis_password", loaded())
    rotation.rotate(rot, "accept", conv, say)
    path = secrets_state_path(lab / "secrets.yml")
    assert path == lab / "secrets.rotation.yml"  # ignored by git as secrets*.yml
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((lab / "secrets.yml").stat().st_mode) == 0o600
    state = RotationState.load(path)
    assert state["redis_password"].previous == old
    assert old not in repr(state) and old not in repr(state["redis_password"])
    assert old not in repr(loaded().secrets)
    pending = rotation.pending(loaded())
    assert set(pending) == {"redis_password"}
    assert old not in rotation.describe("redis_password", pending["redis_password"])


@pytest.mark.parametrize(
    "name", ["postgres_app_password", "qdrant_api_key", "model_api_key", "tls_certificate"]
)
def test_a_secret_without_a_procedure_is_refused_and_nothing_changes(
    lab: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (lab / "secrets.yml").read_bytes()
    assert cli.main(["rotate", name, "-i", INVENTORY]) == 1
    err = capsys.readouterr().err
    assert f"{name} has no zero-downtime rotation procedure yet" in err
    assert "nothing changed" in err
    assert (lab / "secrets.yml").read_bytes() == before
    assert not secrets_state_path(lab / "secrets.yml").exists()


def test_unknown_names_and_environment_secrets_are_refused(
    lab: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["rotate", "no_such_secret", "-i", INVENTORY]) == 1
    assert "not a secret this inventory knows" in capsys.readouterr().err
    monkeypatch.setenv("CITADEL_SECRET_REDIS_PASSWORD", "from-the-environment")
    assert cli.main(["rotate", "redis_password", "-i", INVENTORY]) == 1
    assert "CITADEL_SECRET_REDIS_PASSWORD" in capsys.readouterr().err
    assert not secrets_state_path(lab / "secrets.yml").exists()


def test_the_cli_converges_each_phase_with_apply_and_prints_no_secret(
    lab: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = loaded().secrets["redis_password"]
    limits: list[list[str]] = []

    def apply_hosts(args: Any, _: Loaded) -> tuple[dict[str, HostResult], float]:
        limits.append(list(args.limit))
        return {h: HostResult(h, changed=["x"]) for h in args.limit}, 0.1

    monkeypatch.setattr(cli, "apply_hosts", apply_hosts)
    assert cli.main(["rotate", "redis_password", "-i", INVENTORY]) == 0
    out = capsys.readouterr()
    new = read_secrets_file(lab / "secrets.yml")["redis_password"]
    assert limits[0] == ["data"] and limits[2] == ["data"] and "gateway" in limits[1]
    for text in (out.out, out.err):
        assert old not in text and new not in text
    assert "redis_password: rotated" in out.out


def test_plan_shows_a_pending_rotation_as_a_change(
    lab: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "run_pyinfra", lambda *a, **k: {"plan": {}, "results": {}})
    monkeypatch.setattr(cli, "plan_by_host", lambda report: {})
    assert cli.main(["plan", "-i", INVENTORY]) == 0
    capsys.readouterr()
    conv, (_, say) = Recorder("redis_password"), said()
    rotation.rotate(rotation.rotation_for("redis_password", loaded()), "accept", conv, say)
    assert cli.main(["plan", "-i", INVENTORY]) == 2  # hosts converged, the rotation is not done
    assert "redis_password: rotation pending (accept done); next: `citadel rotate" in (
        capsys.readouterr().out
    )


# -- the lab's JWT signing key -----------------------------------------------------------------


def _gateway_pem(now: Loaded) -> str:
    host = now.cluster.host("gateway")
    files = {f.spec.dest: f for f in render_host(now.cluster, host, now.secrets)}
    f = files[gateway.PUBLIC_KEY]
    assert f.spec.on_change == "reload" and f.spec.validate
    return f.content


def test_the_jwt_key_rotation_accepts_both_keys_then_only_the_new(lab: Path) -> None:
    from citadel_gateway.auth import load_public_keys

    now = loaded()
    auth = now.cluster.host("gateway").gateway.auth  # type: ignore[union-attr]
    ring = KeyRing(Path(auth.public_key_file))  # type: ignore[arg-type]
    old_public = ring.public.read_text()
    [old_kid] = load_public_keys(old_public)
    seen: list[tuple[str, set[str], str]] = []

    def conv(hosts: list[str]) -> bool:
        entry = ring.entry()
        assert entry is not None
        kids = set(load_public_keys(_gateway_pem(loaded())))
        token = mint_dev_token(auth, "rotation")
        seen.append((entry.stage, kids, jwt.get_unverified_header(token)["kid"]))
        assert hosts == ["gateway"]
        return True

    lines, say = said()
    rot = rotation.rotation_for(JWT_KEY, now)
    rotation.rotate(rot, "accept", conv, say)
    [new_kid] = load_public_keys(ring.public.read_text())
    assert new_kid != old_kid
    assert stat.S_IMODE(ring.private.stat().st_mode) == 0o600
    assert stat.S_IMODE(ring.previous_private.stat().st_mode) == 0o600
    rotation.rotate(rotation.rotation_for(JWT_KEY, loaded()), "switch", conv, say)
    # switch converges nothing: the minter is here
    assert jwt.get_unverified_header(mint_dev_token(auth, "x"))["kid"] == new_kid
    assert set(load_public_keys(_gateway_pem(loaded()))) == {new_kid, old_kid}
    rotation.rotate(rotation.rotation_for(JWT_KEY, loaded()), None, conv, say)
    assert seen == [
        ("accept", {new_kid, old_kid}, old_kid),  # both accepted, tokens still the old key's
        ("retire", {new_kid}, new_kid),
    ]
    assert not ring.previous_private.exists() and not ring.previous_public.exists()
    assert not ring.state_path.exists()
    assert set(load_public_keys(_gateway_pem(loaded()))) == {new_kid}
    for line in lines:
        assert "PRIVATE KEY" not in line


def test_without_a_rotation_the_gateway_key_file_is_as_before(lab: Path) -> None:
    now = loaded()
    auth = now.cluster.host("gateway").gateway.auth  # type: ignore[union-attr]
    assert _gateway_pem(now) == Path(auth.public_key_file).read_text() + "\n"  # type: ignore[arg-type]


def test_redis_files_of_a_stage_are_what_the_phase_converges(lab: Path) -> None:
    """accept changes only the data host's users file; switch its password file and the
    gateway's (a reload there); retire the users file again."""

    def data_and_gateway() -> dict[str, str]:
        now = loaded()
        out = {}
        for name in ("data", "gateway"):
            host = now.cluster.host(name)
            for f in render_host(now.cluster, host, now.secrets):
                out[f"{name}:{f.spec.dest}"] = f.content
        return out

    steps = [data_and_gateway()]
    conv = lambda hosts: steps.append(data_and_gateway()) or True  # noqa: E731
    rotation.rotate(rotation.rotation_for("redis_password", loaded()), None, conv, lambda _: None)
    steps.append(data_and_gateway())

    def changed(a: dict[str, str], b: dict[str, str]) -> set[str]:
        return {k for k in a if a[k] != b[k]}

    gw_secret = f"gateway:{gateway.SECRET_FILES['redis_password']}"
    assert changed(steps[0], steps[1]) == {f"data:{redis.ACLFILE}"}
    assert changed(steps[1], steps[2]) == {f"data:{redis.PASSWORD_FILE}", gw_secret}
    assert changed(steps[2], steps[3]) == {f"data:{redis.ACLFILE}"}
    assert steps[4] == steps[3]  # retire converged: the state is gone, nothing left to change
    on_change = {
        f.spec.dest: f.spec.on_change
        for f in render_host(loaded().cluster, loaded().cluster.host("gateway"), loaded().secrets)
    }
    assert on_change[gateway.SECRET_FILES["redis_password"]] == "reload"


def test_grace_waits_before_retire_only(lab: Path) -> None:
    waits: list[float] = []
    order: list[str] = []

    def conv(hosts: list[str]) -> bool:
        entry = rotation.rotation_for("redis_password", loaded()).entry()
        assert entry is not None
        order.append(entry.stage)
        return True

    rot = rotation.rotation_for("redis_password", loaded())
    rotation.rotate(
        rot,
        None,
        conv,
        lambda _: None,
        grace_s=15,
        sleep=lambda s: (waits.append(s), order.append("wait")),
    )
    assert order == ["accept", "switch", "wait", "retire"] and waits == [15]


def test_a_key_rotation_that_stopped_before_the_new_pair_makes_it_on_the_next_run(
    lab: Path,
) -> None:
    """The previous pair is copied before the state names it, the new pair made after: a run
    stopped in between leaves both pairs the same, and the next run makes the new one."""
    now = loaded()
    ring = KeyRing(Path(now.cluster.host("gateway").gateway.auth.public_key_file))  # type: ignore[union-attr, arg-type]
    old = ring.private.read_bytes()
    ring.previous_private.write_bytes(old)
    ring.previous_public.write_bytes(ring.public.read_bytes())
    ring.state().with_entry(JWT_KEY, Entry("accept"))
    assert ring.signing_key() == ring.previous_private  # tokens meanwhile: the old key
    rotation.rotate(rotation.rotation_for(JWT_KEY, now), "accept", lambda h: True, lambda _: None)
    assert ring.private.read_bytes() != old and ring.previous_private.read_bytes() == old
