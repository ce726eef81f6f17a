"""pytest fixtures ``fake_replicate``, ``fake_bedrock``, ``fake_openai`` and ``fake_gemini``: a running fake
plus the environment for it.

Enable with ``pytest_plugins = ["gateway.testing.pytest_plugin"]``. Each fixture starts its fake for
one test and sets the standard variables through ``monkeypatch`` (undone afterwards):

* ``fake_replicate``: ``REPLICATE_BASE_URL`` and ``REPLICATE_API_TOKEN`` (``fake.token``, required).
* ``fake_bedrock``: ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``, dummy ``AWS_ACCESS_KEY_ID``/``SECRET`` (the
  fake verifies signatures with them), ``AWS_REGION=us-east-1``; removes ``AWS_BEARER_TOKEN_BEDROCK``,
  ``AWS_PROFILE`` and session tokens, points the AWS config files at nothing and disables IMDS, so a
  developer's real credentials can never be picked up.
* ``fake_openai``: ``OPENAI_BASE_URL`` (``{url}/v1``), ``OPENAI_API_KEY``, and for Azure
  ``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_API_KEY``, ``OPENAI_API_VERSION``; removes organisation,
  project and Entra ID variables.
* ``fake_gemini``: ``GOOGLE_GEMINI_BASE_URL``, ``GEMINI_API_KEY`` (``GOOGLE_API_KEY`` removed: the client
  prefers it), and for Vertex ``GOOGLE_VERTEX_BASE_URL``, ``GOOGLE_CLOUD_PROJECT``,
  ``GOOGLE_CLOUD_LOCATION``; ``GOOGLE_APPLICATION_CREDENTIALS`` points at nothing. Vertex needs
  credentials passed in (``google.oauth2.credentials.Credentials(token=FAKE_GOOGLE_TOKEN)``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ._dummies import (
    FAKE_AWS_KEY,
    FAKE_AWS_SECRET,
    FAKE_AZURE_KEY,
    FAKE_GEMINI_KEY,
    FAKE_GOOGLE_TOKEN,
    FAKE_OPENAI_KEY,
    FAKE_REPLICATE_TOKEN,
)
from .bedrock import FakeBedrock
from .gemini import FakeGemini
from .openai import FakeOpenAI
from .replicate import FakeReplicate

AZURE_API_VERSION = "2025-04-01-preview"
_OPENAI_UNSET = ("OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_ADMIN_KEY", "AZURE_OPENAI_AD_TOKEN",
                 "OPENAI_WEBHOOK_SECRET")  # fmt: skip
_GOOGLE_UNSET = ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_API_KEY")

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


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    for name in _OPENAI_UNSET:
        monkeypatch.delenv(name, raising=False)
    with FakeOpenAI(api_key=FAKE_OPENAI_KEY, azure_key=FAKE_AZURE_KEY) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{fake.url}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", fake.url)
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", FAKE_AZURE_KEY)
        monkeypatch.setenv("OPENAI_API_VERSION", AZURE_API_VERSION)
        yield fake


@pytest.fixture
def fake_gemini(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    for name in _GOOGLE_UNSET:
        monkeypatch.delenv(name, raising=False)
    with FakeGemini(api_key=FAKE_GEMINI_KEY, token=FAKE_GOOGLE_TOKEN) as fake:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.url)
        monkeypatch.setenv("GEMINI_API_KEY", FAKE_GEMINI_KEY)
        monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", fake.url)
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "fake-project")
        monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", os.devnull)
        yield fake


__all__ = [
    "FAKE_AWS_KEY",
    "FAKE_AWS_SECRET",
    "FAKE_REPLICATE_TOKEN",
    "fake_bedrock",
    "fake_gemini",
    "fake_openai",
    "fake_replicate",
]
