"""The hard stop is hard on time-billed routes: random n, steps and run times never end above a budget.

Every time-billed card that ships (priced per second or per hour) is driven through the real gateway,
the real ledger (SQLite and the real PostgreSQL), the real tiny-digits model or the official Replicate
client against the loopback fake, in virtual time: a clock the test owns decides how long each
denoising step or prediction takes, so runs far longer than their reservation cost no waiting.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import Gateway
from gateway.backends.local import LocalBackend
from gateway.backends.replicate import ReplicateBackend
from gateway.catalog import Catalog, Route
from gateway.config import Settings
from gateway.errors import BudgetExceeded, ProvidersFailed
from gateway.ledger.pricing import MICRO
from gateway.ledger.timebill import expected_seconds, time_billed, work_units
from gateway.policy import PolicySet
from gateway.retry import RetryPolicy
from gateway.testing import FakeReplicate
from gateway.types import ImageRequest
from tests.ledger_support import STORES, drop_schema, with_schema

# tiny-digits-lcm runs only at 1, 2, 4 or 8 steps (tests/test_few_step.py); the random steps here
# are for the cards that take any step count.
TIME_BILLED = [r for r in Catalog.default() if time_billed(r) and r.key != "local/tiny-digits-lcm"]
NO_RETRY = RetryPolicy(max_attempts=1, base_backoff_s=0, max_backoff_s=0, max_retry_after_s=0, jitter=False)


class VirtualClock:
    """Monotonic time that moves only when told to (``sleep``) or on every read (``tick``)."""

    def __init__(self) -> None:
        self.now = time.monotonic()  # starts at the real clock: HTTP timeouts stay meaningful
        self.tick = 0.0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def test_every_shipped_time_billed_card_is_covered() -> None:
    assert {r.provider for r in TIME_BILLED} >= {"local", "replicate"}, TIME_BILLED


def test_estimates_scale_with_images_and_steps() -> None:
    (local,) = [r for r in TIME_BILLED if r.key == "local/tiny-digits"]
    one = expected_seconds(local, ImageRequest.build("7", n=1, steps=10))
    eight = expected_seconds(local, ImageRequest.build("7", n=8, steps=10))
    assert eight == pytest.approx(8 * one)
    assert expected_seconds(local, ImageRequest.build("7", n=1, steps=40)) == pytest.approx(4 * one)
    # Learned from history: p90 seconds per unit x margin, never below what smaller calls took.
    history = [(10, 0.5), (10, 0.6), (20, 1.0), (80, 3.2)]
    learned = expected_seconds(local, ImageRequest.build("7", n=2, steps=20), history)
    assert learned >= 40 * 0.06 and learned >= 1.0


@pytest.fixture(params=STORES)
def ledger_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[], tuple[str, Callable[[], None]]]]:
    """A function that makes a brand-new ledger URL (and its clean-up) for each hypothesis example."""
    if request.param == "sqlite":

        def make() -> tuple[str, Callable[[], None]]:
            d = tempfile.mkdtemp(prefix="tb-ledger-")
            return f"sqlite:///{d}/ledger.db", lambda: shutil.rmtree(d, ignore_errors=True)

        yield make
        return
    base: str = request.getfixturevalue("postgres_url")

    def make_pg() -> tuple[str, Callable[[], None]]:
        schema = f"t_tb_{uuid.uuid4().hex[:16]}"
        return with_schema(base, schema), lambda: drop_schema(base, schema)

    yield make_pg


def _policy(home: Path, limit: Decimal) -> PolicySet:
    p = home / "budget.yaml"
    p.write_text(
        "version: 1\nrules:\n"
        f'  - {{id: team-total, kind: budget, scope: team, period: total, limit_usd: "{limit}"}}\n'
    )
    return PolicySet.load([p])


def _rate_per_second(route: Route) -> Decimal:
    p = route.card.pricing
    return p.usd_per_second if p.unit == "second" and p.usd_per_second else (p.usd_per_hour or 0) / 3600


Call = tuple[int, int, float]  # (n, steps, seconds per unit of work)


def _run(route: Route, ledger_url: str, limit: Decimal, calls: list[Call]) -> list[str]:
    home = Path(tempfile.mkdtemp(prefix="tb-home-"))
    clock = VirtualClock()
    fake: FakeReplicate | None = None
    outcomes: list[str] = []
    try:
        backends: dict[str, Any]
        if route.provider == "local":
            backends = {"local": LocalBackend(clock=clock)}
        else:
            fake = FakeReplicate(token="r8_test", run_seconds=1.0, clock=clock).start()
            backends = {"replicate": ReplicateBackend(api_token="r8_test", base_url=fake.url, clock=clock,
                                                       sleep=clock.sleep, prefer_wait_s=None)}  # fmt: skip
        s = Settings.load(None, home=home, ledger_url=ledger_url)
        with Gateway(s, policy=_policy(home, limit), backends=backends, retry=NO_RETRY) as gw:
            size = max(64, route.card.capabilities.min_side)
            for n, steps, per_unit in calls:
                req = ImageRequest.build("a handwritten 7", n=n, steps=steps, width=size, height=size,
                                         provider=route.provider, model=route.model)  # fmt: skip
                seconds = per_unit * work_units(route, req)
                if fake is not None:
                    fake.run_seconds = seconds
                else:
                    clock.tick = per_unit * n  # every clock read is one denoising step of n images
                try:
                    res = gw.generate(req)
                    outcomes.append(f"ok {res.cost_usd}")
                except BudgetExceeded:
                    outcomes.append("refused")
                except ProvidersFailed as exc:
                    assert "reservation pays for" in str(exc), exc  # noqa: PT017
                    outcomes.append("stopped")
                finally:
                    clock.tick = 0.0
                budgets = gw.explain(req).decision.budgets
                (status,) = gw._core.ledger.budget_status(budgets, gw._core.clock())
                assert status.spent_usd + status.reserved_usd <= limit, (outcomes, status)
                assert status.reserved_usd == 0
            assert gw._core.ledger.verify() == []
    finally:
        if fake is not None:
            fake.stop()
        shutil.rmtree(home, ignore_errors=True)
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("route", TIME_BILLED, ids=lambda r: r.key.split(":")[0])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_time_billed_routes_never_end_above_the_budget(
    route: Route, ledger_factory: Callable[[], tuple[str, Callable[[], None]]], data: st.DataObject
) -> None:
    cap = route.card.capabilities
    rate = _rate_per_second(route)
    seconds_budget = data.draw(st.floats(min_value=0.05, max_value=60.0), label="budget seconds")
    limit = max(MICRO, (rate * Decimal(repr(seconds_budget))).quantize(MICRO))
    calls = data.draw(
        st.lists(
            st.tuples(
                st.integers(1, min(cap.max_images, 4)),
                st.integers(1, 12),
                st.floats(min_value=0.0005, max_value=10.0),  # seconds per image-step: fast to very slow
            ),
            min_size=1,
            max_size=3,
        ),
        label="calls",
    )
    url, cleanup = ledger_factory()
    try:
        _run(route, url, limit, calls)
    finally:
        cleanup()
