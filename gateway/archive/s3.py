"""S3-compatible object storage for the archive (boto3): one bucket and prefix shared by many hosts.

Why boto3 and nothing else: it already speaks SigV4, the credential chain (env, profile, instance
role), ``AWS_ENDPOINT_URL_S3`` for any S3-compatible server (MinIO, Ceph, R2, a test server) and the
retry modes; the store only maps keys to objects. Server-side encryption settings are passed through
unchanged to every ``PutObject`` (``ServerSideEncryption``, ``SSEKMSKeyId``, ``SSECustomerKey``...),
so the bucket's owners decide how objects are encrypted, not this code.

URL: ``s3://bucket/prefix``. Options come from gateway.yaml ``archive.s3``: ``region``,
``endpoint_url`` (else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``), ``sse`` (a mapping of
PutObject encryption arguments), ``object_lock`` (``{mode, days}``: per-object retention on a
versioned, Object-Lock-enabled bucket) and ``max_attempts``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from .store import ArchiveError, BlobStore

# The PutObject arguments that carry encryption settings; anything else in ``sse`` is a typo.
SSE_ARGS = frozenset(
    {
        "ServerSideEncryption",
        "SSEKMSKeyId",
        "SSEKMSEncryptionContext",
        "BucketKeyEnabled",
        "SSECustomerAlgorithm",
        "SSECustomerKey",
        "SSECustomerKeyMD5",
    }
)
_SSE_C_READ = ("SSECustomerAlgorithm", "SSECustomerKey", "SSECustomerKeyMD5")


def parse_s3_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"archive URL must look like s3://bucket/prefix, got {url!r}")
    return parts.netloc, parts.path.strip("/")


class S3Store(BlobStore):
    """Keys become ``<prefix>/<key>`` in ``bucket``. Thread-safe: boto3 clients may be shared."""

    blocking_io = True

    def __init__(self, url: str, options: Mapping[str, Any] | None = None, client: Any = None) -> None:
        opts = dict(options or {})
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        sse = dict(opts.pop("sse", None) or {})
        unknown = set(sse) - SSE_ARGS
        if unknown:
            raise ConfigError(f"archive.s3.sse: unknown PutObject arguments {sorted(unknown)}")
        self._put_args: dict[str, Any] = sse
        self._read_args = {k: sse[k] for k in _SSE_C_READ if k in sse}
        lock = opts.pop("object_lock", None)
        self._lock: tuple[str, float] | None = None
        if lock:
            mode = str(lock.get("mode", "GOVERNANCE")).upper()
            if mode not in ("GOVERNANCE", "COMPLIANCE"):
                raise ConfigError(f"archive.s3.object_lock.mode must be GOVERNANCE or COMPLIANCE, got {mode}")
            self._lock = (mode, float(lock.get("days", 1)))
        if client is None:
            client = _client(opts)
        elif opts:
            raise ConfigError(f"archive.s3: options {sorted(opts)} conflict with a client passed in")
        self._s3 = client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def write(self, key: str, data: bytes, *, immutable: bool = False, durable: bool = True) -> None:
        # A PutObject is durable once S3 answers 200: ``durable`` needs nothing more here.
        if immutable and self.exists(key):
            return
        args = dict(self._put_args)
        if self._lock is not None and key.startswith("objects/"):
            mode, days = self._lock
            args["ObjectLockMode"] = mode
            args["ObjectLockRetainUntilDate"] = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
        self._call("PutObject", key, Bucket=self.bucket, Key=self._key(key), Body=data, **args)

    def read(self, key: str) -> bytes | None:
        try:
            resp = self._s3.get_object(Bucket=self.bucket, Key=self._key(key), **self._read_args)
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise ArchiveError(f"archive {self.url}: GetObject {key}: {_describe(exc)}") from None
        body = resp["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(key), **self._read_args)
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise ArchiveError(f"archive {self.url}: HeadObject {key}: {_describe(exc)}") from None
        return True

    def delete(self, key: str) -> None:
        self._call("DeleteObject", key, Bucket=self.bucket, Key=self._key(key))

    def keys(self, prefix: str) -> Iterator[str]:
        start = len(self._key(""))
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield obj["Key"][start:]
        except Exception as exc:
            if isinstance(exc, GeneratorExit):
                raise
            raise ArchiveError(f"archive {self.url}: ListObjectsV2 {prefix}: {_describe(exc)}") from None

    def _call(self, op: str, key: str, **kwargs: Any) -> Any:
        method = {"PutObject": self._s3.put_object, "DeleteObject": self._s3.delete_object}[op]
        try:
            return method(**kwargs)
        except Exception as exc:
            raise ArchiveError(f"archive {self.url}: {op} {key}: {_describe(exc)}") from None

    def close(self) -> None:
        close = getattr(self._s3, "close", None)
        if close is not None:
            close()


def _client(opts: Mapping[str, Any]) -> Any:
    """A boto3 S3 client from the standard chain; ``endpoint_url`` only when gateway.yaml sets one
    (otherwise botocore reads ``AWS_ENDPOINT_URL_S3`` itself)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:  # pragma: no cover - the extra is missing
        raise ConfigError("the S3 archive needs boto3: pip install 'diffusion-gateway[archive]'") from None
    unknown = set(opts) - {"region", "endpoint_url", "max_attempts", "addressing_style"}
    if unknown:
        raise ConfigError(f"archive.s3: unknown options {sorted(unknown)}")
    config = Config(
        retries={"max_attempts": int(opts.get("max_attempts", 3)), "mode": "standard"},
        s3={"addressing_style": opts.get("addressing_style", "auto")},
    )
    kwargs: dict[str, Any] = {"config": config}
    if opts.get("region"):
        kwargs["region_name"] = opts["region"]
    if opts.get("endpoint_url"):
        kwargs["endpoint_url"] = opts["endpoint_url"]
    return boto3.session.Session().client("s3", **kwargs)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _describe(exc: BaseException) -> str:
    """Error code and message only: never the request (it may carry an SSE-C key or credentials)."""
    code = _code(exc)
    return f"{code or type(exc).__name__}" + (f" ({type(exc).__name__})" if code else "")
