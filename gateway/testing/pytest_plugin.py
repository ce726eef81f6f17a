"""pytest fixtures ``fake_replicate`` and ``fake_bedrock``: a running fake plus the environment for it.

Enable with ``pytest_plugins = ["gateway.testing.pytest_plugin"]``. Each fixture starts its fake for
one test and sets the standard variables through ``monkeypatch`` (undone afterwards):

* ``fake_replicate``: ``REPLICATE_BASE_URL`` and ``REPLICATE_API_TOKEN`` (``fake.token``, required).
* ``fake_bedrock``: ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``, dummy ``AWS_ACCESS_KEY_ID``/``SECRET`` (the
  fake verifies signatures with them), ``AWS_REGION=us-east-1``; removes ``AWS_BEARER_TOKEN_BEDROCK``,
  ``AWS_PROFILE`` and session tokens, points the AWS config files at nothing and disables IMDS, so a
  developer's real credentials can never be picked up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ._dummies import FAKE_AWS_KEY, FAKE_AWS_SECRET, FAKE_REPLICATE_TOKEN
from .bedrock import FakeBedrock
from .replicate import FakeReplicate

_AWS_UNSET = (
    "AWS_BEARER_TOKEN_BEDROCK",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_DEFAULT_REGION",
)


@pytest.fixture
def fake_replicate(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeReplicate]:
    with FakeReplicate(token=FAKE_REPLICATE_TOKEN) as fake:
        monkeypatch.setenv("REPLICATE_API_TOKEN", FAKE_REPLICATE_TOKEN)
        monkeypatch.setenv("REPLICATE_BASE_URL", fake.url)
        yield fake


@pytest.fixture
def fake_bedrock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBedrock]:
    for name in _AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    with FakeBedrock(credentials={FAKE_AWS_KEY: FAKE_AWS_SECRET}) as fake:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_AWS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_AWS_SECRET)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake.url)
        monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield fake


__all__ = ["FAKE_AWS_KEY", "FAKE_AWS_SECRET", "FAKE_REPLICATE_TOKEN", "fake_bedrock", "fake_replicate"]
