"""redis: the API document's commands work with the password, NOAUTH without it; memory policy and
persistence as the model says; bound to the host's address and loopback only.

The password goes to redis-cli on stdin (REDISCLI_AUTH), never on a command line.

Snapshots (redis.backup): the timer is enabled, its unit sandboxed and its last run a success,
the newest snapshot passes redis-check-rdb and is fresher than stale_after_hours, the freshness
metric is in node_exporter's textfile directory, and the password is in no unit setting.
"""

from __future__ import annotations

from citadel.components import redis
from tests.verify import backups

COMPONENT = "redis"

DOC_COMMANDS = """SET "llama:chat:12345" '{"response": "Hello world", "tokens": 2}' EX 3600
GET "llama:chat:12345"
HSET "session:user123" "last_seen" "2025-07-28T10:30:00Z" "model_preference" "llama-3-chat"
HGETALL "session:user123"
"""


def run_stdin(infra, command: str, data: str, timeout: int = 60) -> tuple[int, str, str]:
    client = infra.backend.client
    stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
    stdin.write(data)
    stdin.channel.shutdown_write()
    out = stdout.read().decode()
    err = stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def redis_cli(target, commands: str, secret: str = "redis_password", user: str = "") -> str:
    """Commands piped into redis-cli against the host's address, authenticated from stdin."""
    port = target.host.redis.port
    user_arg = f" --user {user}" if user else ""
    command = (
        "sh -c 'IFS= read -r REDISCLI_AUTH; export REDISCLI_AUTH; "
        f"exec redis-cli --no-raw -h {target.host.address} -p {port}{user_arg}'"
    )
    rc, out, err = run_stdin(target.infra, command, target.secret(secret) + "\n" + commands)
    assert rc == 0, err
    return out


def test_service_runs_and_is_enabled(target):
    service = target.infra.service("redis-server")
    assert service.is_running
    assert service.is_enabled


def test_listens_on_host_address_and_loopback_only(target):
    port = target.host.redis.port
    assert target.infra.socket(f"tcp://{target.host.address}:{port}").is_listening
    assert target.infra.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not target.infra.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_without_auth_noauth(target):
    port = target.host.redis.port
    out = target.infra.run(f"redis-cli -h {target.host.address} -p {port} GET llama:chat:12345")
    assert "NOAUTH" in out.stdout + out.stderr


def test_document_commands_with_auth(target):
    out = redis_cli(target, DOC_COMMANDS)
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == "OK"
    assert lines[1] == '"{\\"response\\": \\"Hello world\\", \\"tokens\\": 2}"'
    assert lines[2] in ("(integer) 2", "(integer) 0")
    assert '"2025-07-28T10:30:00Z"' in out and '"llama-3-chat"' in out
    ttl = redis_cli(target, 'TTL "llama:chat:12345"\n').strip()
    assert 0 < int(ttl.split()[-1]) <= 3600


def test_memory_policy_and_persistence_from_model(target):
    cfg = target.host.redis
    out = redis_cli(target, "CONFIG GET maxmemory-policy\nCONFIG GET appendonly\nCONFIG GET save\n")
    assert cfg.maxmemory_policy in out
    assert ('"yes"' in out) == (cfg.persistence == "aof")
    assert ('""' in out.split('"save"')[1]) == (cfg.persistence != "rdb")
    maxmemory = redis_cli(target, "CONFIG GET maxmemory\n").split()[-1].strip('"')
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}
    assert int(maxmemory) == int(cfg.maxmemory[:-2]) * units[cfg.maxmemory[-2:]]


def test_exporter_user_cannot_read_keys(target):
    if target.host.redis_exporter is None or target.host.redis_exporter.skip:
        return
    out = redis_cli(
        target,
        'GET "llama:chat:12345"\nINFO server\n',
        secret="redis_exporter_password",
        user="citadel_exporter",
    )
    assert "NOPERM" in out
    assert "redis_version" in out


def test_the_running_users_are_the_acl_file(target):
    """Users live in redis.conf's aclfile, loaded with ACL LOAD on a change (no restart): every
    password digest of the file is one the running server checks, and no other."""
    assert redis_cli(target, "CONFIG GET aclfile\n").split()[-1].strip('"') == redis.ACLFILE
    users = target.infra.file(redis.ACLFILE)
    assert users.mode == 0o640 and users.user == "root" and users.group == "redis"
    wanted = {w for w in users.content_string.split() if w.startswith("#")}
    running = {w.strip('"') for w in redis_cli(target, "ACL LIST\n").split() if "#" in w}
    assert {w[w.index("#") :] for w in running} == wanted


def test_data_survives_restart(target):
    if target.host.redis.persistence == "none":
        return
    redis_cli(target, 'SET "citadel:verify:canary" "kept"\nSAVE\n')
    target.infra.check_output("systemctl restart redis-server")
    out = ""
    for _ in range(20):
        out = redis_cli(target, 'GET "citadel:verify:canary"\n')
        if "kept" in out:
            break
    assert '"kept"' in out


def test_the_backup_timer_is_enabled_and_its_unit_sandboxed(target):
    """Snapshots run on redis.backup.schedule (Persistent: a missed run starts at boot)."""
    if not target.host.redis.backup.enabled:
        return
    backups.assert_timer_and_last_run(target, redis.BACKUP, "redis_password")
    password = target.infra.file(redis.PASSWORD_FILE)
    assert password.mode == 0o600 and password.user == "root"


def test_a_snapshot_exists_is_sound_and_fresh(target):
    b = target.host.redis.backup
    if not b.enabled:
        return
    names = target.infra.check_output(
        f"find {b.target} -maxdepth 1 -name '*.rdb' -printf '%f\\n' | sort"
    ).split()
    assert names and len(names) <= b.keep_snapshots, f"snapshots in {b.target}: {names}"
    newest = f"{b.target}/{names[-1]}"
    assert target.infra.file(newest).user == redis.OS_USER
    check = target.infra.run(f"redis-check-rdb {newest}")
    assert check.rc == 0 and "RDB looks OK" in check.stdout + check.stderr, check.stderr
    backups.assert_fresh(target, b, redis.METRIC_FILE)
    assert target.infra.file(redis.RESTORE_SCRIPT).mode == 0o755
