"""JSON logging: one line per record on stdout; one access line per request.

Nothing on the event loop ever writes to stdout, so a slow stdout (a full pipe to journald, a
terminal) never stalls a request:

- access lines (one per request, the hot path) are serialised on the loop (orjson, a few
  microseconds), gathered for ``ACCESS_FLUSH_S`` and handed to a writer thread as one batch:
  one thread wake-up and one write per batch instead of a logging record, a queue put and a
  thread switch per request. If the writer falls ``MAX_PENDING_BYTES`` behind, lines are
  dropped and counted (``gateway_access_log_dropped_total``) rather than held without bound.
- other records (start-up, warnings, errors: rare) go through the stdlib
  :class:`~logging.handlers.QueueHandler` to a listener thread that formats and writes them.

Nothing here ever receives request headers, so tokens cannot reach the log.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from typing import IO, Any

import orjson

from . import metrics

ACCESS = logging.getLogger("citadel_gateway.access")
ACCESS_FLUSH_S = 0.05
ACCESS_BATCH_LINES = 512
MAX_PENDING_BYTES = 16 * 1024 * 1024


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
    _access.close()
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


class AccessWriter:
    """Batches access lines on the event loop; a daemon thread writes each batch."""

    def __init__(self, out: IO[bytes] | None = None) -> None:
        self._out = out
        self._lines: list[bytes] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._batches: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._pending = 0  # bytes handed to the thread and not yet written
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def out(self) -> IO[bytes]:
        return self._out if self._out is not None else sys.stdout.buffer

    def add(self, line: bytes) -> None:
        self._lines.append(line)
        if len(self._lines) >= ACCESS_BATCH_LINES:
            self.flush()
        elif self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on a loop (tests, a thread): no batching
                self.flush()
                return
            self._flush_handle = loop.call_later(ACCESS_FLUSH_S, self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._lines:
            return
        data = b"".join(self._lines)
        count = len(self._lines)
        self._lines.clear()
        with self._lock:
            if self._pending + len(data) > MAX_PENDING_BYTES:
                metrics.ACCESS_LOG_DROPPED.inc(count)
                return
            self._pending += len(data)
        self._ensure_thread()
        self._batches.put(data)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while (data := self._batches.get()) is not None:
            try:
                self.out.write(data)
                self.out.flush()
            except (OSError, ValueError):
                pass  # stdout gone: nothing sensible to do with an access line
            with self._lock:
                self._pending -= len(data)

    def close(self) -> None:
        """Write what is buffered and stop the thread (waits for the writes)."""
        self.flush()
        if self._thread is not None and self._thread.is_alive():
            self._batches.put(None)
            self._thread.join(timeout=5)
        self._thread = None


_access = AccessWriter()


def access(fields: dict[str, Any]) -> None:
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    now = time.time()
    record = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now * 1000) % 1000:03d}Z",
        "level": "info",
        "logger": ACCESS.name,
        "msg": "access",
        **fields,
    }
    try:
        line = orjson.dumps(record, default=str)
    except TypeError:  # an int beyond 64 bit
        line = json.dumps(record, separators=(",", ":"), default=str).encode()
    _access.add(line + b"\n")


def flush_access() -> None:
    _access.flush()
