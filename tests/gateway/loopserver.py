"""A scripted TCP server on an event loop of its own thread: the shape of the hostile peers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self


class LoopServer:
    """Mixin: ``start()`` serves ``self._handle`` on 127.0.0.1 (port in ``self.port``) from a
    thread of its own until ``stop()``. The class keeps ``port``, ``_loop`` and ``_thread``."""

    port: int
    _loop: asyncio.AbstractEventLoop | None
    _thread: threading.Thread | None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        raise NotImplementedError

    def start(self) -> Self:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
