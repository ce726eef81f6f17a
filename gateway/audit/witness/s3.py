"""``s3://bucket/prefix``: heads as objects under S3 Object Lock, written only if absent.

Why Object Lock: in COMPLIANCE mode no user, root included, can delete or overwrite an object version
before its retention date, so the bucket keeps every head even if the gateway's credentials leak.
Each head is one object ``<prefix>/<origin key>/<size, 20 digits>.note`` put with ``If-None-Match: *``
(never replaces a held head) and a retention date. Works with any S3-compatible endpoint through the
standard boto3 chain (``AWS_ENDPOINT_URL_S3``, credentials, region).

URL options: ``?retention_days=N`` (default 3650), ``?mode=COMPLIANCE|GOVERNANCE`` (default
COMPLIANCE). A bucket without Object Lock is refused: it would not be a witness.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..note import TreeHead
from .base import Witness, WitnessedHead, WitnessError, origin_key


class S3Witness(Witness):
    scheme = "s3"

    def __init__(self, url: str, *, client: Any = None) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        opts = dict(parse_qsl(parts.query))
        self.retention_days = int(opts.get("retention_days", "3650"))
        self.mode = opts.get("mode", "COMPLIANCE").upper()
        if not self.bucket or self.mode not in ("COMPLIANCE", "GOVERNANCE") or self.retention_days < 1:
            from ...errors import ConfigError

            raise ConfigError(f"bad S3 witness URL {self.name!r}: s3://BUCKET/PREFIX?retention_days=N")
        self._client = client
        self._checked = False

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", config=Config(retries={"total_max_attempts": 2, "mode": "standard"}, connect_timeout=5)
            )
        return self._client

    def _key(self, origin: str, size: int | None = None) -> str:
        base = f"{self.prefix}/{origin_key(origin)}/" if self.prefix else f"{origin_key(origin)}/"
        return base if size is None else f"{base}{size:020d}.note"

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            raise WitnessError(f"{exc.response.get('Error', {}).get('Code', 'ClientError')}") from exc
        except BotoCoreError as exc:
            raise WitnessError(type(exc).__name__) from None

    def _check_lock(self) -> None:
        if self._checked:
            return
        try:
            conf = self._call(self.client.get_object_lock_configuration, Bucket=self.bucket)
        except WitnessError as exc:
            if "ObjectLockConfigurationNotFound" not in str(exc):
                raise
            conf = {}
        if conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise WitnessError(f"bucket {self.bucket} has no Object Lock: it cannot serve as a witness")
        self._checked = True

    def submit(self, head: TreeHead, note: bytes) -> None:
        from botocore.exceptions import ClientError

        self._check_lock()
        key = self._key(head.origin, head.size)
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retention_days)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=note,
                ContentType="text/plain; charset=utf-8",
                IfNoneMatch="*",
                ObjectLockMode=self.mode,
                ObjectLockRetainUntilDate=until,
                Metadata={"origin": head.origin.encode("ascii", "replace").decode()},
            )
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise WitnessError(code or "ClientError") from None
        held = self._call(self.client.get_object, Bucket=self.bucket, Key=key)["Body"].read()
        if held != note:
            self.check_same(head, held, self.name)

    def heads(self, origin: str) -> list[WitnessedHead]:
        out: list[WitnessedHead] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(origin)}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(self.client.list_objects_v2, **kwargs)
            for obj in page.get("Contents", []):
                body = self._call(self.client.get_object, Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                when = obj.get("LastModified")
                stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(when, dt.datetime) else ""
                out.append(WitnessedHead.from_note(body, stamp))
            if not page.get("IsTruncated"):
                return out
            token = page.get("NextContinuationToken")
