"""Every fault of the OpenAI and Gemini fakes, on every new backend, sync and async, with the real clients.

The clients' own retries are off, so each cell is exactly one HTTP request: the fake's request log
proves the gateway's retry policy is the only one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from image_provider_support import FACTORIES, FAKE_OF, call_for

from gateway.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadResponse,
    ContentFiltered,
    RateLimited,
)
from gateway.testing import FakeServer

pytest_plugins = ["gateway.testing.pytest_plugin"]

# fault -> (inject params, expected error or None for a usable answer)
CELLS: dict[str, tuple[dict[str, Any], type[BackendError] | None]] = {
    "rate_limit": ({"retry_after": 1.5}, RateLimited),
    "server_error": ({}, BackendUnavailable),
    "moderation": ({}, ContentFiltered),
    "slow": ({"delay": 5}, BackendTimeout),
    "reset": ({}, BackendUnavailable),
    "malformed_json": ({}, BadResponse),
    "truncated_base64": ({}, BadResponse),
    "no_usage": ({}, None),
}


def test_every_fault_kind_is_in_the_matrix() -> None:
    from gateway.testing import FakeGemini, FakeOpenAI

    assert set(CELLS) == set(FakeOpenAI.FAULTS) == set(FakeGemini.FAULTS)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("fault", sorted(CELLS))
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_fault_cell(name: str, fault: str, mode: str, request: pytest.FixtureRequest) -> None:
    fake: FakeServer = request.getfixturevalue(FAKE_OF[name])
    params, expected = CELLS[fault]
    fake.inject(fault, **params)
    backend = FACTORIES[name]()
    call = call_for(name, timeout_s=0.75 if fault == "slow" else 10.0)

    async def run_async() -> Any:
        try:
            return await backend.agenerate(call)
        finally:
            await backend.aclose()

    try:
        if expected is None:
            result = backend.generate(call) if mode == "sync" else asyncio.run(run_async())
            assert result.images and result.usage.output_image_tokens is None
        else:
            with pytest.raises(expected) as info:
                backend.generate(call) if mode == "sync" else asyncio.run(run_async())
            err = info.value
            assert err.provider == name
            if fault == "rate_limit":
                assert err.retry_after == pytest.approx(1.5)  # retry-after-ms wins over retry-after
            if fault == "moderation":
                assert not err.retryable
    finally:
        fake.release()
        backend.close()
    assert len(fake.requests_of("generate")) == 1  # the client retried nothing
