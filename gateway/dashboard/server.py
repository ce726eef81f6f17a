"""Serving the dashboard: uvicorn on a socket we bind ourselves (so ``--port 0`` can report its port).

uvicorn comes with the ``dashboard`` extra; it is imported only here, when a server actually starts.
Its access log is off: query strings may carry a one-time ``?token=``, and a dashboard's log has no
business recording who looked at which record.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from .app import DashboardApp


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(app: DashboardApp, sock: socket.socket, *, on_ready: Callable[[], None] | None = None) -> None:
    """Run until interrupted (Ctrl-C) on an already bound socket."""
    from ..errors import ConfigError

    try:
        import uvicorn
    except ImportError:
        raise ConfigError(
            "the dashboard server needs uvicorn: pip install 'diffusion-gateway[dashboard]'"
        ) from None
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=True,
        lifespan="on",
        proxy_headers=False,
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready()
    server.run(sockets=[sock])


__all__ = ["bind", "serve"]
