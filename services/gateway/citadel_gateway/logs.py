"""JSON logging: one line per record on stdout; one access line per request.

Records are handed to a :class:`logging.handlers.QueueHandler` and formatted and written by a
background :class:`~logging.handlers.QueueListener` thread, so a slow stdout (a full pipe to
journald, a terminal) never stalls the event loop in the middle of a request.

Nothing here ever receives request headers, so tokens cannot reach the log.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any

ACCESS = logging.getLogger("citadel_gateway.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out["msg"] = record.getMessage()
            out.update(fields)
        else:
            out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, separators=(",", ":"), default=str)


class _Enqueue(logging.handlers.QueueHandler):
    """Defers formatting to the listener thread (the stdlib QueueHandler formats in the caller).

    A traceback is rendered here, in the caller, while its frames are still alive; everything
    else in a record (message, args, ``fields``) is only read by the formatter later, and the
    gateway never mutates a ``fields`` dict after logging it.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


_listener: logging.handlers.QueueListener | None = None


def _stop_listener() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()  # drains the queue: nothing logged before exit is lost
        _listener = None


def setup(level: str = "info") -> None:
    global _listener
    root = logging.getLogger()
    if _listener is None or not any(isinstance(h, _Enqueue) for h in root.handlers):
        for h in list(root.handlers):
            root.removeHandler(h)
        _stop_listener()
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(JsonFormatter())
        q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        root.addHandler(_Enqueue(q))
        _listener = logging.handlers.QueueListener(q, out)
        _listener.start()
        atexit.register(_stop_listener)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def access(fields: dict[str, Any]) -> None:
    if ACCESS.isEnabledFor(logging.INFO):
        ACCESS.info("access", extra={"fields": fields})
