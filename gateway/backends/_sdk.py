"""What the backends built on an official provider SDK (``openai``, ``google-genai``) share: the import
check, planning-time checks, and one cached client per backend (sync) and per event loop (async).

Why per loop: an async client's connection pool belongs to the loop that opened it, so a client made
under one ``asyncio.run`` cannot serve the next. The SDK is imported only when the first client is
built, so ``check`` and ``import gateway`` never pay for it (google-genai takes about a second).
"""

from __future__ import annotations

import abc
import asyncio
import importlib.util
import threading
from typing import Any, ClassVar

from ..errors import BackendError, UsageError
from .base import Backend, BackendCall


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a missing parent package counts)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class SdkBackend(Backend, abc.ABC):
    """Base of the SDK backends. Subclasses set the class names and implement :meth:`build` (plus
    :meth:`credentials_problem`, :meth:`validate` and, when their async client closes differently,
    :meth:`close_async_client`)."""

    label: ClassVar[str] = "SDK"
    extra: ClassVar[str] = ""  # the pip extra that brings the SDK
    module: ClassVar[str] = ""  # the SDK's import name
    package: ClassVar[str] = ""  # the SDK's distribution name, for messages

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync_client: Any = None
        self._async_client: tuple[asyncio.AbstractEventLoop, Any] | None = None

    # ------------------------------------------------------------------ pure core

    def credentials_problem(self) -> str | None:
        """Why no call could authenticate, from arguments and environment only (no I/O)."""
        return None

    def validate(self, call: BackendCall) -> None:
        """Raise the BackendError the request would get, before any call (no I/O)."""

    def check(self, call: BackendCall) -> str | None:
        if not installed(self.module):
            client = self.package or self.module
            return f"needs the {client} client: pip install 'diffusion-gateway[{self.extra}]'"
        problem = self.credentials_problem()
        if problem:
            return problem
        try:
            self.validate(call)
        except BackendError as exc:
            return str(exc)
        return None

    def needs_extra(self) -> UsageError:
        return UsageError(f"backend {self.name!r} needs: pip install 'diffusion-gateway[{self.extra}]'")

    # ------------------------------------------------------------------ clients

    @abc.abstractmethod
    def build(self, *, is_async: bool) -> Any:
        """A new client (raise :meth:`needs_extra` when the SDK is missing, UsageError on bad config)."""

    def client(self, *, is_async: bool) -> Any:
        """The sync client (one per backend), or the async one of the running event loop."""
        if is_async:
            loop = asyncio.get_running_loop()
            pair = self._async_client
            if pair is None or pair[0] is not loop:
                pair = self._async_client = (loop, self.build(is_async=True))
            return pair[1]
        if self._sync_client is None:
            with self._lock:
                if self._sync_client is None:
                    self._sync_client = self.build(is_async=False)
        return self._sync_client

    async def close_async_client(self, client: Any) -> None:
        await client.close()

    def close(self) -> None:
        client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        pair, self._async_client = self._async_client, None
        if pair is not None and pair[0] is asyncio.get_running_loop():
            await self.close_async_client(pair[1])
        self.close()


__all__ = ["SdkBackend", "installed"]
