"""A real S3-compatible server for tests: moto's ``ThreadedMotoServer`` (``moto[server]`` on PyPI).

Why a server and not ``mock_aws``: the archive must be exercised through boto3's real HTTP path
(SigV4, ``AWS_ENDPOINT_URL_S3``, streaming bodies, error codes), exactly as it talks to AWS, MinIO or
R2. The server listens on a free loopback port for the whole session; each test gets its own bucket.

Fixtures:
``s3_server``  the endpoint URL (session).
``s3_env``     sets the standard AWS variables (dummy credentials, region, ``AWS_ENDPOINT_URL_S3``)
               for one test and returns an :class:`S3Test` that makes buckets (optionally with
               Object Lock, which moto implements: versioned bucket, retention per object version).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class S3Test:
    endpoint: str

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(self, *, object_lock: bool = False) -> str:
        """A new, empty bucket; with ``object_lock`` it is versioned and Object-Lock enabled."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        client = self.client()
        try:
            client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        finally:
            client.close()
        return name


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Test:
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return S3Test(s3_server)
