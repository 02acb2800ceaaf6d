"""`citadel pins check | lock`: pins.yml as a lock file, its sources, production's coverage."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from citadel import artifacts, pins
from citadel.cli import main

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = str(ROOT / "inventory" / "production.yml")


def _check(capsys: pytest.CaptureFixture[str], pins_file: Path | str) -> tuple[int, str, str]:
    rc = main(["pins", "check", "-i", PRODUCTION, "--pins", str(pins_file)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_the_repository_pins_everything_production_deploys_each_with_its_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = _check(capsys, artifacts.PINS_FILE)
    assert rc == 0, err
    for pin in pins.pins_of(artifacts.load_pins()):
        assert pin.sha256 is not None and len(pin.sha256) == 64, pin
        assert pin.source and "https://" in pin.source, pin
        assert f"{pin.name} {pin.version} ({pin.arch})" in out and pin.sha256 in out
    assert "UNPINNED" not in out
    assert "EB693B3035CD5710E231E123A4B469963BF863CC" in out  # NVIDIA's repository key
    assert "Every artifact" in out


def test_production_uses_qdrant_and_ollama() -> None:
    used = pins.used_artifacts(PRODUCTION)
    assert used[("qdrant", "1.18.2")] == ["vector-db"]
    assert used[("ollama", "0.12.3")] == ["llm-embed"]


def _unpinned(tmp_path: Path, name: str) -> Path:
    data = artifacts.load_pins()
    for entry in data[name].values():
        entry["sha256"] = {arch: None for arch in entry["sha256"]}
    path = tmp_path / "pins.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_unpinned_artifact_production_uses_fails_check_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _check(capsys, _unpinned(tmp_path, "ollama"))
    assert rc == 1
    assert "UNPINNED" in out
    assert "ollama 0.12.3 (x86_64): UNPINNED (used on llm-embed)" in err
    assert "qdrant" not in err


def test_a_version_production_uses_missing_from_pins_fails_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = artifacts.load_pins()
    data["qdrant"] = {"9.9.9": data["qdrant"]["1.18.2"]}
    path = tmp_path / "pins.yml"
    path.write_text(yaml.safe_dump(data))
    rc, _, err = _check(capsys, path)
    assert rc == 1 and "qdrant 1.18.2: not in" in err and "vector-db" in err


# -- lock ---------------------------------------------------------------------------------------

PINS_TEXT = """\
# A comment that must survive.
tool:
  # why this version
  "1.0.0":
    url: {base}/v{{version}}/tool-{{arch}}.tar.gz
    sha256: {{x86_64: null, aarch64: null}}   # filled by pins lock
other:
  "2.0":
    url:
      x86_64: {base}/other-amd64.tgz
    sha256:
      x86_64: null
    source:
      x86_64: https://example.invalid/vendor-sha256sum.txt
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A loopback HTTP server for the release files; yields (base URL, path -> content)."""
    files = {
        "/v1.0.0/tool-x86_64.tar.gz": b"tool for x86_64",
        "/v1.0.0/tool-aarch64.tar.gz": b"tool for aarch64",
        "/other-amd64.tgz": b"other",
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_lock_writes_each_arch_keeping_comments_and_layout(
    tmp_path: Path, server: tuple[str, dict[str, bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    base, files = server
    path = tmp_path / "pins.yml"
    path.write_text(PINS_TEXT.format(base=base))
    assert main(["pins", "lock", "tool", "1.0.0", "--pins", str(path)]) == 0
    text = path.read_text()
    assert text.startswith("# A comment that must survive.\n")
    assert "  # why this version\n" in text and "# filled by pins lock" in text
    data = yaml.safe_load(text)
    tool = data["tool"]["1.0.0"]
    assert tool["sha256"] == {
        "x86_64": _sha(files["/v1.0.0/tool-x86_64.tar.gz"]),
        "aarch64": _sha(files["/v1.0.0/tool-aarch64.tar.gz"]),
    }
    assert "citadel pins lock" in tool["source"]["x86_64"] and base in tool["source"]["aarch64"]
    assert data["other"] == yaml.safe_load(PINS_TEXT.format(base=base))["other"]  # untouched
    assert "written to" in capsys.readouterr().out


def test_lock_one_arch_in_block_style_keeps_its_given_source(
    tmp_path: Path, server: tuple[str, dict[str, bytes]]
) -> None:
    base, files = server
    path = tmp_path / "pins.yml"
    path.write_text(PINS_TEXT.format(base=base))
    assert main(["pins", "lock", "other", "2.0", "--arch", "x86_64", "--pins", str(path)]) == 0
    other = yaml.safe_load(path.read_text())["other"]["2.0"]
    assert other["sha256"] == {"x86_64": _sha(files["/other-amd64.tgz"])}
    assert other["source"] == {"x86_64": "https://example.invalid/vendor-sha256sum.txt"}
    assert yaml.safe_load(path.read_text())["tool"]["1.0.0"]["sha256"]["x86_64"] is None


def test_lock_refuses_to_overwrite_a_different_pin_naming_both(
    tmp_path: Path, server: tuple[str, dict[str, bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    base, files = server
    path = tmp_path / "pins.yml"
    path.write_text(
        PINS_TEXT.format(base=base).replace(
            "x86_64: null, aarch64", "x86_64: " + "a" * 64 + ", aarch64"
        )
    )
    before = path.read_text()
    assert main(["pins", "lock", "tool", "1.0.0", "--pins", str(path)]) == 1
    err = capsys.readouterr().err
    assert "a" * 64 in err and _sha(files["/v1.0.0/tool-x86_64.tar.gz"]) in err
    assert "refusing to overwrite" in err
    assert path.read_text() == before  # nothing written, not even the other arch


def test_lock_of_an_equal_pin_changes_nothing(
    tmp_path: Path, server: tuple[str, dict[str, bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    base, files = server
    path = tmp_path / "pins.yml"
    text = PINS_TEXT.format(base=base).replace(
        "x86_64: null\n", f"x86_64: {_sha(files['/other-amd64.tgz'])}\n"
    )
    path.write_text(text)
    assert main(["pins", "lock", "other", "2.0", "--pins", str(path)]) == 0
    assert path.read_text() == text and "already pinned" in capsys.readouterr().out


def test_lock_reads_file_urls_and_names_unknown_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = tmp_path / "rel-x86_64.bin"
    release.write_bytes(b"local release")
    path = tmp_path / "pins.yml"
    path.write_text(f'local:\n  "1":\n    url: {tmp_path.as_uri()}/rel-{{arch}}.bin\n')
    assert main(["pins", "lock", "local", "1", "--arch", "x86_64", "--pins", str(path)]) == 0
    assert yaml.safe_load(path.read_text())["local"]["1"]["sha256"] == {
        "x86_64": _sha(b"local release")
    }
    assert main(["pins", "lock", "local", "2", "--pins", str(path)]) == 1
    assert "add the version with its url template first" in capsys.readouterr().err


def test_set_pin_on_the_real_file_to_its_own_value_is_the_identity() -> None:
    text = artifacts.PINS_FILE.read_text()
    pin = next(p for p in pins.pins_of(artifacts.load_pins()) if p.name == "qdrant")
    assert pin.sha256 is not None
    assert pins.set_pin(text, pin.name, pin.version, pin.arch, pin.sha256, "x") == text
