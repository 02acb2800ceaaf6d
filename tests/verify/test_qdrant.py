"""qdrant: /readyz; the API key is enforced; the document's create / upsert / search (with its
payload filter) work with the key. Where the inventory declares Qdrant skipped (the lab), every
test here is reported skipped with that reason (tests/verify/conftest.py); nowhere else.

The key is read on the host from /etc/qdrant/api-key.header (curl -H @file), never passed in a
command line.

Snapshots (qdrant.backup): the timer is enabled, its unit sandboxed and its last run a success;
the newest backup holds a snapshot of each of the model's collections matching its .sha256, it is
fresher than stale_after_hours, its metric is exported, and the server kept no copy.
"""

from __future__ import annotations

import json
import shlex

from citadel.components import qdrant
from tests.verify import backups

COMPONENT = "qdrant"


def url(target) -> str:
    return qdrant.base_url(str(target.host.address), target.host.qdrant)


def curl(target, method: str, path: str, body: object | None = None, key: bool = True):
    """(HTTP status, JSON body) of a request made on the qdrant host."""
    parts = ["curl", "-s", "-o", "/tmp/citadel-verify-qdrant.json", "-w", "%{http_code}"]
    parts += ["-X", method]
    if key:
        parts += ["-H", f"@{qdrant.API_KEY_HEADER}"]
    if body is not None:
        parts += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    parts.append(url(target) + path)
    status = target.infra.check_output(" ".join(shlex.quote(p) for p in parts))
    text = target.infra.check_output("cat /tmp/citadel-verify-qdrant.json")
    return int(status), (json.loads(text) if text.strip().startswith(("{", "[")) else text)


def vector(size: int, first: float) -> list[float]:
    return [first] + [0.1] * (size - 1)


def test_service_runs_with_file_limit(target):
    service = target.infra.service("qdrant")
    assert service.is_running
    assert service.is_enabled
    limit = target.infra.check_output("systemctl show -p LimitNOFILE --value qdrant")
    assert int(limit) == target.host.qdrant.max_open_files


def test_readyz(target):
    status, _ = curl(target, "GET", "/readyz", key=False)
    assert status == 200


def test_collections_need_the_api_key(target):
    assert curl(target, "GET", "/collections", key=False)[0] == 401
    assert curl(target, "GET", "/collections")[0] == 200


def test_model_collections_exist(target):
    for c in target.host.qdrant.collections:
        status, body = curl(target, "GET", f"/collections/{c.name}")
        assert status == 200
        assert qdrant.parse_collection(json.dumps(body)) == {"size": c.size, "distance": c.distance}


def test_document_create_upsert_search(target):
    # The document's create (my_collection, 4096, Cosine): idempotent when the model has it.
    status, _ = curl(
        target,
        "PUT",
        "/collections/my_collection",
        {"vectors": {"size": 4096, "distance": "Cosine"}},
    )
    assert status in (200, 409)
    status, body = curl(
        target,
        "PUT",
        "/collections/my_collection/points?wait=true",
        {
            "points": [
                {"id": 1, "vector": vector(4096, 0.1), "payload": {"text": "Sample document"}}
            ]
        },
    )
    assert status == 200, body
    status, body = curl(
        target,
        "POST",
        "/collections/my_collection/points/search",
        {"vector": vector(4096, 0.1), "limit": 10, "with_payload": True},
    )
    assert status == 200, body
    assert body["result"][0]["payload"] == {"text": "Sample document"}


def test_document_search_with_payload_filter(target):
    size = next(c.size for c in target.host.qdrant.collections if c.name == "documents")
    points = [
        {"id": 1, "vector": vector(size, 0.1), "payload": {"category": "technology"}},
        {"id": 2, "vector": vector(size, 0.4), "payload": {"category": "sports"}},
    ]
    status, body = curl(
        target, "PUT", "/collections/documents/points?wait=true", {"points": points}
    )
    assert status == 200, body
    status, body = curl(
        target,
        "POST",
        "/collections/documents/points/search",
        {
            "vector": vector(size, 0.4),
            "limit": 5,
            "with_payload": True,
            "filter": {"must": [{"key": "category", "match": {"value": "technology"}}]},
        },
    )
    assert status == 200, body
    assert [p["payload"]["category"] for p in body["result"]] == ["technology"]


def test_the_backup_timer_is_enabled_and_its_unit_sandboxed(target):
    if not target.host.qdrant.backup.enabled:
        return
    backups.assert_timer_and_last_run(target, qdrant.BACKUP, "qdrant_api_key")


def test_a_backup_of_every_collection_exists_and_is_fresh(target):
    cfg = target.host.qdrant
    b = cfg.backup
    if not b.enabled:
        return
    stamps = target.infra.check_output(
        f"find {b.target} -mindepth 1 -maxdepth 1 -type d -regextype posix-extended "
        f"-regex '.*/[0-9]{{8}}T[0-9]{{6}}Z' -printf '%f\\n' | sort"
    ).split()
    assert stamps and len(stamps) <= b.keep_snapshots, stamps
    newest = f"{b.target}/{stamps[-1]}"
    for c in cfg.collections:
        check = target.infra.run(f"cd {newest} && sha256sum -c {c.name}.snapshot.sha256")
        assert check.rc == 0, check.stdout + check.stderr
    backups.assert_fresh(target, b, qdrant.METRIC_FILE)
    # The server deleted its copies once downloaded.
    for c in cfg.collections:
        status, body = curl(target, "GET", f"/collections/{c.name}/snapshots")
        assert status == 200 and body["result"] == [], body
