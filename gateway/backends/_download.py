"""Fetch a provider's output files safely: allowed hosts only, no credentials, bounded size.

Replicate hands back URLs; the official client's ``FileOutput.read()`` sends the API token to whatever
host the URL names. The gateway fetches outputs itself instead, with a client that has no
``Authorization`` header at all, and refuses:

* hosts outside the allow-list (default: ``replicate.delivery`` and its subdomains, over https, plus
  the API base URL's own origin, which is how loopback fakes serve files),
* redirects that leave the allow-list (each hop is checked; at most ``max_redirects``),
* bodies over ``max_bytes`` (checked against ``Content-Length`` and again while streaming),
* anything that is not one whole PNG/JPEG/WebP of sane dimensions (see ``validate_image``).

``data:`` URIs (small outputs inlined by ``Prefer: wait``) are decoded locally under the same caps.
"""

from __future__ import annotations

import base64
import binascii
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from ..errors import BackendTimeout, BackendUnavailable, BadResponse
from ._wire import DEFAULT_MAX_PIXELS, redact, validate_image

if TYPE_CHECKING:
    import httpx

DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = ("replicate.delivery",)
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UnsafeOutput(BadResponse):
    """The provider pointed at an output the gateway refuses to fetch; sending the call again won't help."""

    retryable = False


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = -1
    return scheme, host, port


@dataclass(frozen=True, slots=True)
class DownloadPolicy:
    """Where outputs may come from and how big they may be.

    ``allowed_hosts`` entries are either a host name (matches it and its subdomains, https only) or a
    full origin such as ``http://127.0.0.1:8000`` (matches exactly that scheme, host and port).
    """

    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_redirects: int = 3
    provider: str = ""

    @classmethod
    def build(
        cls,
        allowed_hosts: Sequence[str] | None,
        base_url: str | None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        provider: str = "",
    ) -> DownloadPolicy:
        hosts = list(DEFAULT_ALLOWED_HOSTS if allowed_hosts is None else allowed_hosts)
        if base_url:
            scheme, host, port = _origin(base_url)
            hosts.append(f"{scheme}://{host}:{port}")
        return cls(allowed_hosts=tuple(hosts), max_bytes=max_bytes, provider=provider)

    def allows(self, url: str) -> bool:
        scheme, host, port = _origin(url)
        if not host or port < 0:
            return False
        for entry in self.allowed_hosts:
            if "://" in entry:
                if _origin(entry) == (scheme, host, port):
                    return True
            elif scheme == "https":
                allowed = entry.lower().strip(".")
                if host == allowed or host.endswith("." + allowed):
                    return True
        return False

    def describe(self, url: str) -> str:
        """A URL safe to print: origin only (output paths are capability URLs)."""
        scheme, host, port = _origin(url)
        return f"{scheme}://{host}" + (f":{port}" if port not in (0, _DEFAULT_PORTS.get(scheme)) else "")

    # ------------------------------------------------------------------ shared core

    def _check_url(self, url: str) -> None:
        if not self.allows(url):
            raise UnsafeOutput(
                f"refusing to fetch output from {self.describe(url)}: host not in the allow-list",
                provider=self.provider,
            )

    def _next_hop(self, url: str, status: int, location: str | None, hops: int) -> str:
        if not location:
            raise BadResponse(f"output fetch got HTTP {status} without a Location", provider=self.provider)
        if hops >= self.max_redirects:
            raise UnsafeOutput(
                f"output fetch exceeded {self.max_redirects} redirects", provider=self.provider
            )
        target = urljoin(url, location)
        self._check_url(target)
        return target

    def _check_status(self, status: int, url: str) -> None:
        if status < 400:
            return
        where = self.describe(url)
        if status >= 500 or status == 429:
            raise BackendUnavailable(f"output fetch from {where} got HTTP {status}", provider=self.provider)
        raise BadResponse(
            f"output fetch from {where} got HTTP {status}", provider=self.provider, status=status
        )

    def _check_length(self, declared: str | None) -> None:
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise UnsafeOutput(
                f"output is {declared} bytes, over the {self.max_bytes}-byte cap", provider=self.provider
            )

    def _too_big(self) -> UnsafeOutput:
        return UnsafeOutput(f"output exceeds the {self.max_bytes}-byte cap", provider=self.provider)

    def _finish(self, data: bytes) -> bytes:
        validate_image(data, provider=self.provider, max_pixels=self.max_pixels)
        return data

    def decode_data_uri(self, uri: str) -> bytes:
        head, sep, payload = uri.partition(",")
        if not sep or not head.lower().startswith("data:") or not head.lower().endswith(";base64"):
            raise BadResponse("unsupported data: URI output (base64 expected)", provider=self.provider)
        if len(payload) * 3 // 4 > self.max_bytes:
            raise self._too_big()
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise BadResponse("data: URI output is not valid base64", provider=self.provider) from None
        return self._finish(data)

    def _map_transport(self, exc: Exception, url: str) -> Exception:
        import httpx

        where = self.describe(url)
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(f"output fetch from {where} timed out", provider=self.provider)
        return BackendUnavailable(
            f"output fetch from {where} failed: {redact(type(exc).__name__ + ' ' + str(exc))}",
            provider=self.provider,
        )

    # ------------------------------------------------------------------ I/O twins

    def fetch(self, client: httpx.Client, url: str, *, timeout_s: float) -> bytes:
        """GET ``url`` with ``client`` (which must carry no credentials) under the policy."""
        import httpx

        if url.startswith("data:"):
            return self.decode_data_uri(url)
        self._check_url(url)
        for hops in range(self.max_redirects + 1):
            try:
                with client.stream("GET", url, timeout=timeout_s, follow_redirects=False) as resp:
                    if resp.is_redirect:
                        url = self._next_hop(url, resp.status_code, resp.headers.get("location"), hops)
                        continue
                    self._check_status(resp.status_code, url)
                    self._check_length(resp.headers.get("content-length"))
                    buf = bytearray()
                    for chunk in resp.iter_bytes():
                        buf += chunk
                        if len(buf) > self.max_bytes:
                            raise self._too_big()
            except httpx.HTTPError as exc:
                raise self._map_transport(exc, url) from None
            return self._finish(bytes(buf))
        raise UnsafeOutput(
            "output fetch exceeded the redirect limit", provider=self.provider
        )  # pragma: no cover

    async def afetch(self, client: httpx.AsyncClient, url: str, *, timeout_s: float) -> bytes:
        """The async twin of :meth:`fetch`."""
        import httpx

        if url.startswith("data:"):
            return self.decode_data_uri(url)
        self._check_url(url)
        for hops in range(self.max_redirects + 1):
            try:
                async with client.stream("GET", url, timeout=timeout_s, follow_redirects=False) as resp:
                    if resp.is_redirect:
                        url = self._next_hop(url, resp.status_code, resp.headers.get("location"), hops)
                        continue
                    self._check_status(resp.status_code, url)
                    self._check_length(resp.headers.get("content-length"))
                    buf = bytearray()
                    async for chunk in resp.aiter_bytes():
                        buf += chunk
                        if len(buf) > self.max_bytes:
                            raise self._too_big()
            except httpx.HTTPError as exc:
                raise self._map_transport(exc, url) from None
            return self._finish(bytes(buf))
        raise UnsafeOutput(
            "output fetch exceeded the redirect limit", provider=self.provider
        )  # pragma: no cover


_SSL_LOCK = threading.Lock()
_SSL: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context per process (httpx's defaults: certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``).

    Building one loads the CA bundle, ~160 ms on a busy 2-core machine; every httpx client the
    backends make (API and downloads, sync and per event loop) shares this one instead.
    """
    global _SSL
    import httpx

    with _SSL_LOCK:
        if _SSL is None:
            _SSL = httpx.create_ssl_context()
        return _SSL


def download_client_kwargs() -> dict[str, Any]:
    """Settings for the credential-free download client: no auth header, no automatic redirects.

    ``trust_env`` stays on so corporate proxies (``HTTPS_PROXY``) keep working; httpx never reads
    ``.netrc`` unless asked to, so no credential can come from the environment either.
    """
    return {
        "headers": {"User-Agent": "diffusion-gateway-downloader"},
        "follow_redirects": False,
        "verify": shared_ssl_context(),
    }


__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "DEFAULT_MAX_BYTES",
    "DownloadPolicy",
    "UnsafeOutput",
    "download_client_kwargs",
    "shared_ssl_context",
]
