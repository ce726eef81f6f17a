"""Keep every output, pay once: the content-addressed output archive, idempotency keys, result cache.

``open_archive(settings)`` picks the store from the URL scheme through a small registry (``file`` and
``s3``); boto3 is imported only when an ``s3://`` archive is opened. See docs/archive.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError
from .store import Archive, ArchivedObject, ArchiveError, BlobStore, LocalStore, NotArchived

if TYPE_CHECKING:
    from ..config import Settings


def _local(url: str, _options: Mapping[str, Any]) -> BlobStore:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"archive URL {url!r} has a host; use file:///absolute/dir")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise ConfigError(f"archive URL {url!r} must be absolute (file:///dir)")
    return LocalStore(path)


def _s3(url: str, options: Mapping[str, Any]) -> BlobStore:
    cls: Callable[[str, Mapping[str, Any]], BlobStore] = import_module("gateway.archive.s3").S3Store
    return cls(url, options)


# scheme -> factory(url, options)
STORES: dict[str, Callable[[str, Mapping[str, Any]], BlobStore]] = {"file": _local, "s3": _s3}


def archive_url(settings: Settings) -> str:
    """The configured URL, or the default directory under the gateway home."""
    url = settings.archive.url
    return url if url else (settings.home / "archive").as_uri()


def open_archive(settings: Settings) -> Archive | None:
    """The archive gateway.yaml configures; None when it says ``url: off`` (policy must allow that)."""
    url = archive_url(settings)
    if url.strip().lower() == "off":
        return None
    scheme = url.split(":", 1)[0].lower() if "://" in url else ""
    factory = STORES.get(scheme)
    if factory is None:
        raise ConfigError(f"unsupported archive URL {url!r}; use file:///dir, s3://bucket/prefix or off")
    return Archive(factory(url, settings.archive.s3), retention_days=settings.archive.retention_days)


__all__ = [
    "STORES",
    "Archive",
    "ArchiveError",
    "ArchivedObject",
    "BlobStore",
    "LocalStore",
    "NotArchived",
    "archive_url",
    "open_archive",
]
