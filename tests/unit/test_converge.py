"""plan / apply reports from pyinfra's JSON; production is refused from this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.cli import main
from citadel.converge import (
    EXIT_CHANGES,
    EXIT_NO_CHANGE,
    format_plan,
    plan_by_host,
    plan_exit_code,
    results_by_host,
)
from citadel.verify_run import format_summary, summarize

PLAN = {
    "plan": [
        {
            "name": "Refresh apt package lists",
            "names": ["apt.update"],
            "hosts_with_change": ["data"],
            "hosts_with_conditional_change": [],
        },
        {
            "name": "redis: configure | Write /etc/redis/redis.conf",
            "names": ["files.put"],
            "hosts_with_change": ["data"],
            "hosts_with_conditional_change": [],
        },
        {
            "name": "redis: activate | Restart redis-server",
            "names": ["systemd.service"],
            "hosts_with_change": [],
            "hosts_with_conditional_change": ["data"],
        },
        {
            "name": "Shell: migrate",
            "names": ["server.shell"],
            "hosts_with_change": ["gateway"],
            "hosts_with_conditional_change": [],
        },
    ],
    "results": None,
}


def test_plan_lists_changes_per_host_and_marks_shell_and_conditional() -> None:
    plans = plan_by_host(PLAN)
    assert plans["data"].changes == ["redis: configure | Write /etc/redis/redis.conf"]
    assert plans["data"].conditional == ["redis: activate | Restart redis-server"]
    assert plans["gateway"].shell == ["Shell: migrate"]
    text = format_plan(plans, ["data", "gateway", "webui"])
    assert "webui: no changes" in text
    assert "[shell: always runs]" in text
    assert plan_exit_code(plans) == EXIT_CHANGES


def test_housekeeping_and_conditional_only_mean_no_drift() -> None:
    plan = {"plan": [PLAN["plan"][0], PLAN["plan"][2]]}
    assert plan_exit_code(plan_by_host(plan)) == EXIT_NO_CHANGE


def test_results_count_changed_failed_and_unchanged() -> None:
    report = {
        "results": {
            "operations": [
                {"name": "a", "success": ["data"], "error": [], "no_change": ["gateway"]},
                {"name": "b", "success": [], "error": ["gateway"], "no_change": ["data"]},
            ],
            "failed_hosts": ["gateway", "webui"],
        }
    }
    results = results_by_host(report)
    assert results["data"].changed == ["a"] and results["data"].unchanged == 1
    assert results["gateway"].failed == ["b"]
    assert results["webui"].failed  # unreachable hosts are failures too


def test_plan_against_production_is_refused_here(monkeypatch, capsys) -> None:
    from citadel.labsecrets import all_secret_names
    from citadel.loader import load_cluster

    for name in all_secret_names(load_cluster("inventory/production.yml").cluster):
        monkeypatch.setenv(f"CITADEL_SECRET_{name.upper()}", "x")
    monkeypatch.delenv("CITADEL_ALLOW_PRODUCTION", raising=False)

    def must_not_connect(*args, **kwargs):
        raise AssertionError("tried to connect to production")

    monkeypatch.setattr("citadel.cli.run_pyinfra", must_not_connect)
    monkeypatch.setattr("citadel.cli.run_verify", must_not_connect)
    # production with its Clerk instance filled in (unfilled, it is refused earlier: exit 2)
    filled = "tests/unit/inventories/production_clerk_filled.yml"
    for command in (["plan"], ["apply"], ["verify"]):
        assert main([*command, "-i", filled]) == 1
        assert "refusing to connect to production" in capsys.readouterr().err


def test_plan_validates_before_anything_connects(capsys) -> None:
    assert main(["plan", "-i", "tests/unit/inventories/bad_port_clash.yml"]) == 2
    assert "already used by postgres" in capsys.readouterr().err


def test_verify_summary_from_junit(tmp_path: Path) -> None:
    junit = tmp_path / "v.xml"
    junit.write_text(
        """<testsuites><testsuite>
        <testcase classname="tests.verify.test_redis" name="test_auth[data]"/>
        <testcase classname="tests.verify.test_qdrant" name="test_ready[vector-db]">
          <skipped message="qdrant 1.15.4: artifact unavailable"/></testcase>
        <testcase classname="tests.verify.test_postgres" name="test_sql[data]">
          <failure message="boom"/></testcase>
        </testsuite></testsuites>"""
    )
    cells = summarize(junit)
    assert cells[("redis", "data")].status == "verified"
    assert cells[("qdrant", "vector-db")].status == "skipped: qdrant 1.15.4: artifact unavailable"
    assert cells[("postgres", "data")].status == "FAILED"
    assert "vector-db" in format_summary(cells)


@pytest.mark.parametrize("limit", [["nope"]])
def test_unknown_limit_is_one_line(limit) -> None:
    from citadel.cli import _selected_hosts
    from citadel.errors import CitadelError
    from citadel.loader import load_cluster

    with pytest.raises(CitadelError, match="--limit nope: no host or role"):
        _selected_hosts(load_cluster("inventory/lab.yml"), limit)


def test_rollout_with_one_backend_per_model_is_one_run() -> None:
    from citadel.loader import load_cluster
    from citadel.rollout import rollout_phases

    hosts = load_cluster("inventory/production.yml").cluster.hosts
    (phase,) = rollout_phases(hosts)
    assert sorted(phase) == sorted(h.name for h in hosts)


def test_rollout_keeps_all_but_one_backend_of_a_model_serving() -> None:
    from citadel.loader import load_cluster
    from citadel.rollout import rollout_phases

    cluster = load_cluster("inventory/production.yml").cluster
    chat = cluster.host("llm-chat")
    twins = [
        chat.model_copy(update={"name": f"llm-chat{i}", "address": chat.address + 10 + i})
        for i in (2, 3)
    ]
    phases = rollout_phases([*cluster.hosts, *twins])
    others = [h.name for h in cluster.hosts if h.model is None]
    assert phases == [
        others,
        ["llm-chat", "llm-instruct", "llm-embed"],  # every model's first backend
        ["llm-chat2"],
        ["llm-chat3"],
    ]


def test_wait_until_served_settles_then_polls_until_each_model_has_a_backend() -> None:
    from citadel.rollout import SETTLE_S, wait_until_served

    answers = iter(
        [
            {},  # gateway not answering
            {"llama_chat": "unhealthy", "embeddings": "healthy"},
            {"llama_chat": "degraded", "embeddings": "healthy"},  # one backend back: served
        ]
    )
    slept: list[float] = []
    missing = wait_until_served(
        "http://gw/health",
        {"llama_chat", "embeddings"},
        fetch=lambda url: next(answers),
        sleep=slept.append,
        clock=lambda: 0.0,
    )
    assert missing == {} and slept == [SETTLE_S, 1.0, 1.0]


def test_wait_until_served_gives_up_with_what_is_missing() -> None:
    from citadel.rollout import wait_until_served

    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    missing = wait_until_served(
        "http://gw/health",
        {"llama_chat"},
        settle_s=0,
        timeout_s=5,
        fetch=lambda url: {"llama_chat": "unhealthy"},
        sleep=sleep,
        clock=lambda: now[0],
    )
    assert missing == {"llama_chat": "unhealthy"} and now[0] == 5


def test_a_wave_serves_its_models_health_names() -> None:
    from citadel.loader import load_cluster
    from citadel.rollout import health_url, services_of

    cluster = load_cluster("inventory/lab.yml").cluster
    assert health_url(cluster) == "http://10.210.10.39:8000/health"
    assert services_of(cluster, ["llm-chat", "llm-embed", "data"]) == {"llama_chat", "embeddings"}
