"""What a backend's status means for a request, and the summary of its error text that goes to
the log (findings 7 and 8 of the hardening issue): credentials redacted, one short line."""

from __future__ import annotations

import pytest
from citadel_gateway.backend_errors import FAILED, NOT_SERVED, OK, REFUSED, summary, verdict

pytestmark = pytest.mark.gateway


@pytest.mark.parametrize(
    ("status", "meaning"),
    [
        (200, OK),
        (201, OK),
        (204, OK),
        (301, FAILED),
        (302, FAILED),
        (304, FAILED),
        (307, FAILED),
        (400, REFUSED),
        (413, REFUSED),
        (422, REFUSED),
        (404, NOT_SERVED),
        (401, FAILED),
        (403, FAILED),
        (405, FAILED),
        (429, FAILED),
        (500, FAILED),
        (503, FAILED),
    ],
)
def test_only_a_2xx_is_an_answer(status: int, meaning: str) -> None:
    assert verdict(status) == meaning


@pytest.mark.parametrize(
    ("body", "secret"),
    [
        (b'{"error":{"message":"db failed: password=hunter2"}}', "hunter2"),
        (b'{"detail":"auth with api_key: sk-live-abc123"}', "sk-live-abc123"),
        (b"upstream said Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        (b"cannot reach postgres://app:s3cret@10.0.0.5/db", "s3cret"),
        (b'{"message":"token \\"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln\\" expired"}', "eyJ"),
        (b"key AKIAIOSFODNN7EXAMPLEAKIAIOSFODNN7EXAMPLE leaked", "AKIAIOSFODNN7EXAMPLE"),
        (b'{"error":"secret: \'very secret value\'"}', "very secret value"),
    ],
)
def test_the_logged_summary_redacts_credentials(body: bytes, secret: str) -> None:
    line = summary(body)
    assert secret not in line
    assert "redacted" in line


def test_the_summary_is_one_short_line_of_the_message() -> None:
    body = b'{"error":{"message":"model overloaded\\nretry later ' + b"x" * 1000 + b'"}}'
    line = summary(body)
    assert line.startswith("model overloaded retry later")
    assert "\n" not in line and len(line) <= 200
    assert summary(b"\xff\xfe not utf-8 <html>").startswith("\ufffd")
