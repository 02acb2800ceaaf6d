"""Listening sockets handed over by systemd (socket activation, ``sd_listen_fds(3)``).

With ``citadel-gateway.socket`` systemd owns the listening socket: it stays open while the
gateway restarts (an upgrade, a unit change), so a client that connects in between waits in the
socket's backlog for the new process instead of being refused. The protocol: ``LISTEN_PID`` is
this process, ``LISTEN_FDS`` counts the sockets, which start at file descriptor 3.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

FIRST_FD = 3


def inherited_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed to this process (none without socket activation).

    The variables are removed once read, so processes this one starts (uvicorn's workers are
    handed the sockets themselves) never take them for their own."""
    env = os.environ if environ is None else environ
    pid, count = env.pop("LISTEN_PID", None), env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None:
        return []
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return []  # meant for another process (e.g. a parent's, leaked through an exec)
    out = []
    for fd in range(FIRST_FD, FIRST_FD + int(count)):
        sock = socket.socket(fileno=fd)  # family and type read from the descriptor itself
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"socket activation: fd {fd} is not a stream socket")
        os.set_inheritable(fd, True)
        out.append(sock)
    return out


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, str | bytes):
        return f"unix:{name!s}"
    return f"{name[0]}:{name[1]}"
