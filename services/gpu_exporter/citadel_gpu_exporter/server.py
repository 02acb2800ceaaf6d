"""A tiny threaded WSGI server: ``/metrics`` (Prometheus text) and ``/`` (a landing page)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from . import __version__

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

LANDING = (
    "<html><head><title>citadel GPU exporter</title></head><body>"
    "<h1>citadel GPU exporter {version}</h1>"
    '<p><a href="/metrics">Metrics</a></p></body></html>\n'
)


def make_app(registry: CollectorRegistry) -> WsgiApp:
    metrics = make_wsgi_app(registry)
    landing = LANDING.format(version=__version__).encode()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/":
            headers = [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(landing))),
            ]
            start_response("200 OK", headers)
            return [landing]
        body = b"Not Found\n"
        start_response(
            "404 Not Found",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _family(host: str, port: int) -> socket.AddressFamily:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]


def make_http_server(app: WsgiApp, host: str, port: int) -> WSGIServer:
    family = _family(host, port)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = family

    return make_server(host, port, app, server_class=Server, handler_class=_QuietHandler)
