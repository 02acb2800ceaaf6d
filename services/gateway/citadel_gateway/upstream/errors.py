"""What an upstream call raises; every message is safe to show (no secrets)."""

from __future__ import annotations


class UpstreamError(Exception):
    """Base of the errors below."""


class ConnectFailed(UpstreamError):
    """No connection: nothing was sent, another backend may be tried."""


class Disconnected(UpstreamError):
    """The connection broke (or the response was malformed) before the response was complete."""


class StaleConnection(Disconnected):
    """A kept-alive connection the server had closed: it answered nothing."""


class TooLarge(Disconnected):
    """The response is larger than the client's limits (headers, their count, or a body read
    whole): a broken backend; the connection is closed, nothing more is buffered."""
