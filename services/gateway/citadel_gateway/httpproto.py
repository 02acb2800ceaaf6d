"""uvicorn's httptools protocol, answering its own 400s (a request it cannot parse) in the API
document's error format instead of plain text. Everything else is uvicorn's."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .errors import GatewayError, error_body, new_request_id


def bad_request(msg: str) -> bytes:
    err = GatewayError(
        "INVALID_PARAMS", "Malformed HTTP request", {"field": "request", "issue": msg}
    )
    return error_body(err, new_request_id())


class GatewayHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        body = bad_request(msg)
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
