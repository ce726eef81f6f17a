"""Loopback fakes of Replicate, AWS Bedrock, OpenAI Images (+ Azure) and Gemini, with fault injection.

Public, so applications built on the gateway can test their own error handling without keys or a
network::

    from gateway.testing import FakeReplicate

    with FakeReplicate() as fake:               # a real HTTP server on 127.0.0.1, in a thread
        fake.inject("rate_limit", retry_after=2)  # the next create answers 429 + Retry-After
        ...  # point REPLICATE_BASE_URL at fake.url and run your code
        assert fake.requests_of("create")

Or from a shell: ``python -m gateway.testing replicate|bedrock|openai|gemini --port 8750 [--fault
rate_limit:2]``; a running fake takes more faults over HTTP (``POST /__fake__/faults {"fault": "slow",
"times": 1}``). With pytest, add
``pytest_plugins = ["gateway.testing.pytest_plugin"]`` to get the ``fake_replicate``, ``fake_bedrock``,
``fake_openai`` and ``fake_gemini`` fixtures (environment variables set, dummy credentials, nothing left
behind).
Only the standard library and Pillow are used: no replicate, boto3, openai or google-genai import happens
here (the OpenAI and Gemini fakes sign their PNGs with c2pa-python, imported on the first image).
"""

from ._dummies import (
    FAKE_AWS_KEY,
    FAKE_AWS_SECRET,
    FAKE_AZURE_KEY,
    FAKE_GEMINI_KEY,
    FAKE_GOOGLE_TOKEN,
    FAKE_OPENAI_KEY,
    FAKE_REPLICATE_TOKEN,
)
from ._http import FakeServer, Fault, RecordedRequest, Reply, png_bytes
from ._signed import provider_root_pem, signed_png
from .bedrock import FakeBedrock
from .gemini import FakeGemini
from .openai import FakeOpenAI
from .replicate import FakeReplicate

FAULTS: dict[str, frozenset[str]] = {
    "replicate": FakeReplicate.FAULTS,
    "bedrock": FakeBedrock.FAULTS,
    "openai": FakeOpenAI.FAULTS,
    "gemini": FakeGemini.FAULTS,
}

__all__ = [
    "FAKE_AWS_KEY",
    "FAKE_AWS_SECRET",
    "FAKE_AZURE_KEY",
    "FAKE_GEMINI_KEY",
    "FAKE_GOOGLE_TOKEN",
    "FAKE_OPENAI_KEY",
    "FAKE_REPLICATE_TOKEN",
    "FAULTS",
    "FakeBedrock",
    "FakeGemini",
    "FakeOpenAI",
    "FakeReplicate",
    "FakeServer",
    "Fault",
    "RecordedRequest",
    "Reply",
    "png_bytes",
    "provider_root_pem",
    "signed_png",
]
