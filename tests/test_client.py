"""The orchestrator end to end: real policy, ledger, audit, provenance and telemetry; MockBackend routes."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway import AsyncGateway, Context, Gateway, ImageRequest, MockBackend
from gateway.backends.base import BackendCall, BackendResult, Usage
from gateway.backends.mock import solid_png
from gateway.catalog import Catalog, ModelCard, ProviderCard
from gateway.config import Settings
from gateway.errors import (
    AuditWriteError,
    BackendUnavailable,
    BudgetExceeded,
    ContentFiltered,
    InvalidRequestError,
    NoEligibleRoute,
    PolicyDenied,
    ProvidersFailed,
    RateLimited,
)
from gateway.retry import RetryPolicy

SRC = {"source": "test", "as_of": "2026-11-01"}


def model(mid: str, usd: str = "0.01", indemnity: str = "none") -> ModelCard:
    return ModelCard.model_validate({
        "id": mid, "name": mid, "regions": ["us-east-1"],
        "licence": {"name": "Apache-2.0", "commercial_use": True, **SRC},
        "indemnity": {"level": indemnity, **SRC}, "training_data": {"disclosed": True, **SRC},
        "provenance": SRC, "moderation": {"provider_side": False, **SRC},
        "pricing": {"unit": "image", "per_image": [{"usd": usd}], **SRC},
        "capabilities": {"max_images": 4, "min_side": 64, "max_side": 1024},
        "defaults": {"width": 256, "height": 256},
    })  # fmt: skip


def catalog(**routes: str) -> Catalog:
    """routes: provider name -> price; one model "m" per provider."""
    return Catalog(ProviderCard(provider=p, name=p, models=(model("m", usd),)) for p, usd in routes.items())


def png_fn(call: BackendCall) -> list[bytes]:
    r = call.request
    return [solid_png(r.width or 256, r.height or 256, 90 + i) for i in range(r.n)]


class Recorder:
    """A MockBackend function that fails the first ``fail`` calls with ``exc``."""

    def __init__(self, exc: Exception | None = None, fail: int = 0) -> None:
        self.exc, self.fail, self.calls = exc, fail, 0

    def __call__(self, call: BackendCall) -> list[bytes]:
        self.calls += 1
        if self.exc is not None and self.calls <= self.fail:
            raise self.exc
        return png_fn(call)


NO_SLEEP = RetryPolicy(max_attempts=3, base_backoff_s=0, max_backoff_s=0, max_retry_after_s=30, jitter=False)
SLEPT: list[float] = []


async def _asleep(s: float) -> None:
    SLEPT.append(s)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def make(settings: Settings, cat: Catalog, backends: dict[str, Any], **kw: Any) -> Gateway:
    return Gateway(settings, catalog=cat, backends=backends, retry=kw.pop("retry", NO_SLEEP),
                   sleep=SLEPT.append, asleep=_asleep, **kw)  # fmt: skip


def test_success_leaves_cost_audit_trace_and_provenance(settings: Settings) -> None:
    rec = Recorder()
    with make(settings, catalog(a="0.02"), {"a": MockBackend(rec)}) as gw:
        res = gw.generate("a lighthouse", n=2, seed=9, team="design")
        assert [i.width for i in res.images] == [256, 256]
        assert res.provider == "a" and res.seed == 9
        assert res.cost_usd == Decimal("0.04") == res.estimated_cost_usd
        assert res.audit_seq is not None and res.trace_id
        assert {i.watermark for i in res.images} == {"embedded"}
        assert {i.c2pa for i in res.images} == {"signed"}
        audit = gw._core.audit
        last = audit.get(res.audit_seq)
        assert last is not None and last["event"] == "request" and last["team"] == "design"
        assert "a lighthouse" not in str(last)  # prompts are hashed, not stored, by default
        assert audit.verify().ok


def test_retry_then_fallback_to_the_next_eligible_route(settings: Settings) -> None:
    down = Recorder(BackendUnavailable("503", provider="a"), fail=99)
    ok = Recorder()
    with make(settings, catalog(a="0.01", b="0.02"), {"a": MockBackend(down), "b": MockBackend(ok)}) as gw:
        res = gw.generate("a boat")
    assert down.calls == 3 and ok.calls == 1  # three tries on a, then b
    assert [a.outcome for a in res.attempts] == ["BackendUnavailable", "ok"]
    assert res.attempts[0].retries == 2
    assert res.provider == "b" and res.cost_usd == Decimal("0.02")


def test_rate_limit_is_retried_on_the_same_route(settings: Settings) -> None:
    flaky = Recorder(RateLimited("429", provider="a", retry_after=1.0), fail=1)
    with make(settings, catalog(a="0.01"), {"a": MockBackend(flaky)}) as gw:
        res = gw.generate("a boat")
    assert flaky.calls == 2 and res.attempts[0].retries == 1


def test_content_filter_does_not_shop_for_another_provider(settings: Settings) -> None:
    filt = Recorder(ContentFiltered("blocked", provider="a"), fail=99)
    other = Recorder()
    backends = {"a": MockBackend(filt), "b": MockBackend(other)}
    with make(settings, catalog(a="0.01", b="0.02"), backends) as gw, pytest.raises(ContentFiltered):
        gw.generate("a boat")
    assert filt.calls == 1 and other.calls == 0


def test_all_routes_failing_is_providers_failed_and_releases_money(settings: Settings) -> None:
    down = Recorder(BackendUnavailable("down", provider="x"), fail=99)
    with make(settings, catalog(a="0.01", b="0.01"), {"a": MockBackend(down), "b": MockBackend(down)}) as gw:
        with pytest.raises(ProvidersFailed) as err:
            gw.generate("a boat")
        assert len(err.value.attempts) == 2
        rows = gw._core.ledger.report(by=["provider"])
        assert sum(Decimal(str(r.get("spent_usd", r.get("actual_usd", 0)))) for r in rows) == 0
        events = [r["event"] for r in gw._core.audit.iter_records()]
        assert events == ["attempt", "attempt", "failed"]


def test_policy_denial_never_reaches_a_backend(settings: Settings, tmp_path: Path) -> None:
    pol = tmp_path / "deny.yaml"
    pol.write_text("version: 1\nrules:\n  - id: no-boats\n    kind: blocklist\n    terms: [boat]\n")
    rec = Recorder()
    s = settings.model_copy(update={"policies": (pol,)})
    with make(s, catalog(a="0.01"), {"a": MockBackend(rec)}) as gw:
        with pytest.raises(PolicyDenied) as err:
            gw.generate("a b.o.a.t on the sea")
        assert "no-boats" in err.value.rule_ids[0]
        assert [r["event"] for r in gw._core.audit.iter_records()] == ["denied"]
    assert rec.calls == 0


def test_budget_refusal_never_reaches_a_backend(settings: Settings, tmp_path: Path) -> None:
    pol = tmp_path / "budget.yaml"
    pol.write_text(
        "version: 1\nrules:\n  - id: tiny\n    kind: budget\n    when: {team: design}\n    scope: team\n"
        "    period: day\n    limit_usd: '0.05'\n"
    )
    rec = Recorder()
    s = settings.model_copy(update={"policies": (pol,)})
    with make(s, catalog(a="0.02"), {"a": MockBackend(rec)}) as gw:
        gw.generate("x", team="design")
        gw.generate("x", team="design")
        with pytest.raises(BudgetExceeded):
            gw.generate("x", team="design")
        gw.generate("x", team="other")  # other teams are not in this budget's scope
        events = [r["event"] for r in gw._core.audit.iter_records()]
        assert events == ["attempt", "request"] * 2 + ["budget_refused"] + ["attempt", "request"]
    assert rec.calls == 3


def test_fail_closed_when_the_audit_cannot_be_written(settings: Settings) -> None:
    rec = Recorder()
    with make(settings, catalog(a="0.01"), {"a": MockBackend(rec)}) as gw:
        audit = gw._core.audit

        def broken(records: Any) -> list[int]:
            raise AuditWriteError("disk full")

        audit.append_many = broken  # type: ignore[method-assign]
        with pytest.raises(AuditWriteError):
            gw.generate("x")
    assert rec.calls == 1


def test_no_eligible_route_explains_every_drop(settings: Settings) -> None:
    with make(settings, catalog(a="0.01"), {"a": MockBackend(png_fn)}) as gw:
        with pytest.raises(NoEligibleRoute, match="at most 4 image"):
            gw.generate("x", n=5)
        plan = gw.explain("x", n=5).to_dict()
        assert plan["route"] is None and plan["routing"]["candidates"][0]["stage"] == "capability"


def test_embedded_default_refuses_a_prompt_without_a_digit(settings: Settings) -> None:
    with Gateway(settings) as gw, pytest.raises(InvalidRequestError, match="exactly one digit"):
        gw.generate("a cat", provider="local")


def test_embedded_default_generates_digits(settings: Settings) -> None:
    with Gateway(settings) as gw:
        res = gw.generate("a handwritten 7", n=2, seed=1)
        again = gw.generate("a handwritten 7", n=2, seed=1)
    assert res.provider == "local" and res.model == "tiny-digits"
    assert res.images[0].metadata["upscaled"] is True
    assert res.cost_usd > 0
    # Same seed, same pixels (provenance adds request-bound marks, so compare decoded content shape only).
    assert [i.width for i in res.images] == [256, 256] == [i.width for i in again.images]


def test_async_gateway_runs_concurrently(settings: Settings) -> None:
    # Overlap is measured by counting calls in flight, not by a wall-clock bound (which flakes on a
    # loaded machine): ten requests that each wait on the backend must all be waiting at once.
    in_flight = peak = 0
    all_started = asyncio.Event()

    async def slow(call: BackendCall) -> BackendResult:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if peak == 10:
            all_started.set()
        try:
            await asyncio.wait_for(all_started.wait(), timeout=30)
        finally:
            in_flight -= 1
        return BackendResult(tuple(png_fn(call)), Usage(images=call.request.n, elapsed_s=0.2))

    async def main() -> list[Any]:
        async with AsyncGateway(settings, catalog=catalog(a="0.01"), backends={"a": MockBackend(slow)},
                                retry=NO_SLEEP, asleep=_asleep) as gw:  # fmt: skip
            return await asyncio.gather(*(gw.generate(f"boat {i}") for i in range(10)))

    results = asyncio.run(main())
    assert peak == 10  # all ten were inside the backend together: overlapped, not serial
    assert len({r.audit_seq for r in results}) == 10


def test_async_cancellation_releases_the_reservation(settings: Settings, tmp_path: Path) -> None:
    pol = tmp_path / "budget.yaml"
    pol.write_text(
        "version: 1\nrules:\n  - id: b\n    kind: budget\n    scope: org\n    period: total\n"
        "    limit_usd: '0.01'\n"
    )
    s = settings.model_copy(update={"policies": (pol,)})
    ev: asyncio.Event | None = None

    async def hang(call: BackendCall) -> BackendResult:
        assert ev is not None
        ev.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def main() -> None:
        nonlocal ev
        ev = asyncio.Event()
        gw = AsyncGateway(s, catalog=catalog(a="0.01"), backends={"a": MockBackend(hang)}, retry=NO_SLEEP)
        task = asyncio.create_task(gw.generate("x"))
        await ev.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        budgets = gw._core.policy.evaluate(ImageRequest(prompt="x"), Context()).budgets
        status = gw._core.ledger.budget_status(budgets, dt.datetime.now(dt.UTC))
        assert status and all(Decimal(str(st.reserved_usd)) == 0 for st in status)
        await gw.aclose()

    asyncio.run(main())
