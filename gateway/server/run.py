"""Serving: uvicorn on a socket we bind ourselves (so ``--port 0`` can say which port it got).

One worker runs the app in this process. ``--workers N`` hands the same socket to N uvicorn worker
processes (uvicorn's supervisor restarts any that die); each builds its own app from the config path
in ``GATEWAY_SERVER_CONFIG`` and they share the ledger, audit log and keys through the database,
which is what keeps budgets atomic across them (and across hosts on PostgreSQL).

Graceful shutdown is uvicorn's: on SIGTERM/SIGINT it stops accepting, lets in-flight requests finish
(they settle their reservations and write their audit records) for up to ``graceful_s`` seconds,
cancels what is left (a cancelled gateway call releases its reservation), then runs the app's
shutdown, which closes the stores.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import ConfigError

APP_FACTORY = "gateway.server.app:app_from_env"


def _check_installed() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"the server needs {exc.name}: pip install 'diffusion-gateway[server]'") from None


@contextlib.contextmanager
def _stop_cleanly() -> Iterator[None]:
    """uvicorn re-raises the signal that stopped it once it has shut down (so a default handler would
    end the process with -SIGTERM). A shutdown that drained cleanly is a success: exit 0."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: None)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def preflight(config: str | os.PathLike[str] | None) -> None:
    """Check the config and open every store once before spawning workers: a worker that cannot start
    is restarted by uvicorn's supervisor for ever, so a bad setting must fail here, loudly, instead."""
    from ..audit.configure import audit_from_settings
    from ..config import Settings
    from .app import _server_settings
    from .keys import KeyStore

    s = Settings.load(config)
    _server_settings(s)
    KeyStore(s.resolved_ledger_url).close()
    audit_from_settings(s).close()


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    workers: int = 1,
    config: str | os.PathLike[str] | None = None,
    graceful_s: float = 30.0,
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. ``on_ready(host, port)`` runs once the socket listens."""
    _check_installed()
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ..dashboard.server import bind

    if config is not None:
        os.environ["GATEWAY_SERVER_CONFIG"] = str(Path(config).resolve())
    else:
        os.environ.pop("GATEWAY_SERVER_CONFIG", None)
    common = {
        "log_level": "warning",
        "access_log": False,  # keys never reach a log; the audit log is the access record
        "server_header": False,
        "lifespan": "on",
        "proxy_headers": False,
        "timeout_graceful_shutdown": int(graceful_s),
        # Longer than clients' idle-connection expiry (httpx: 5 s), so a client never reuses a
        # keep-alive connection at the moment the server closes it (a spurious connection error).
        "timeout_keep_alive": 30,
        "backlog": 2048,
    }
    if workers <= 1:
        from .app import app_from_env

        app = app_from_env()  # built before binding: a bad config fails before anyone connects
        sock = bind(host, port)
        try:
            if on_ready is not None:
                on_ready(host, sock.getsockname()[1])
            with _stop_cleanly():
                uvicorn.Server(uvicorn.Config(app, **common)).run(sockets=[sock])  # type: ignore[arg-type]
        finally:
            sock.close()
        return
    preflight(config)
    sock = bind(host, port)
    try:
        cfg = uvicorn.Config(APP_FACTORY, factory=True, workers=workers, **common)  # type: ignore[arg-type]
        if on_ready is not None:
            on_ready(host, sock.getsockname()[1])
        with _stop_cleanly():
            Multiprocess(cfg, sockets=[sock]).run()
    finally:
        sock.close()


__all__ = ["APP_FACTORY", "serve"]
