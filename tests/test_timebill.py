"""Sizing a time-billed reservation: host load, recent calls, the card's floor, and runs that were stopped.

Pure functions over explicit samples and an explicit contention figure: no model, no clock, no load.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.catalog import Catalog, Route
from gateway.ledger import timebill
from gateway.ledger.timebill import (
    MARGIN,
    STOPPED_GROWTH,
    WorkHistory,
    expected_seconds,
    runs_on_host_cpu,
    work_units,
)
from gateway.types import ImageRequest


def _route(key: str) -> Route:
    (route,) = [r for r in Catalog.default() if r.key == key]
    return route


LOCAL = _route("local/tiny-digits")
REQ = ImageRequest.build("a handwritten 7", n=2, steps=10)  # 20 units
CARD_PER_UNIT = LOCAL.card.pricing.expected_seconds / (LOCAL.card.defaults.steps or 1)


def _remote_time_billed() -> Route:
    return next(r for r in Catalog.default() if timebill.time_billed(r) and r.provider != "local")


def test_only_local_cpu_routes_follow_the_host_load() -> None:
    assert runs_on_host_cpu(LOCAL)
    assert not runs_on_host_cpu(_remote_time_billed())


def test_the_card_figure_is_a_floor_scaled_by_contention() -> None:
    fast = [(20, 0.01)] * 5  # a host far quicker than the card's conservative figure
    idle = expected_seconds(LOCAL, REQ, fast, contention=1.0)
    assert idle == pytest.approx(CARD_PER_UNIT * 20)
    assert expected_seconds(LOCAL, REQ, fast, contention=8.0) == pytest.approx(8 * idle)


def test_history_is_kept_in_uncontended_seconds() -> None:
    # The same work took 10x longer at contention 10: both are the same uncontended speed.
    seen = [(20.0, 30.0, 1.0, 0.0)] * 3 + [(20.0, 300.0, 10.0, 0.0)] * 3
    quiet = expected_seconds(LOCAL, REQ, seen, contention=1.0)
    assert quiet == pytest.approx(30.0 * MARGIN)
    assert expected_seconds(LOCAL, REQ, seen, contention=12.0) == pytest.approx(12 * quiet)
    # A route billed on someone else's hardware ignores this host's load entirely.
    remote = _remote_time_billed()
    req = ImageRequest.build("a handwritten 7", n=1)
    units = work_units(remote, req)
    rows = [(units, 500.0, 10.0, 0.0)] * 3
    assert expected_seconds(remote, req, rows, contention=10.0) == pytest.approx(500.0 * MARGIN)


def test_a_slow_recent_call_bounds_the_estimate_over_the_percentile() -> None:
    calm = [(20.0, 20.0, 1.0, 0.0)] * 50
    spike = [*calm, (20.0, 80.0, 1.0, 0.0)]
    assert expected_seconds(LOCAL, REQ, calm, contention=1.0) == pytest.approx(20.0 * MARGIN)
    assert expected_seconds(LOCAL, REQ, spike, contention=1.0) == pytest.approx(80.0 * MARGIN)
    aged = [*spike, *([(20.0, 20.0, 1.0, 0.0)] * timebill.RECENT)]  # out of the recent window again
    assert expected_seconds(LOCAL, REQ, aged, contention=1.0) == pytest.approx(20.0 * MARGIN)


def test_one_stopped_run_raises_the_next_reservation_beyond_what_it_was_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(timebill.CONTENTION_ENV, "1")
    allowed = CARD_PER_UNIT * 20  # the first call reserved the card's figure and was stopped there
    history = WorkHistory()
    history.observe_stopped(LOCAL.key, 20, allowed)
    (sample,) = history.samples(LOCAL.key)
    assert sample[3] == 1.0
    retry = expected_seconds(LOCAL, REQ, history.samples(LOCAL.key))
    assert retry == pytest.approx(allowed * STOPPED_GROWTH * MARGIN)
    assert retry > 2 * allowed


def test_history_file_round_trips_and_reads_the_old_two_field_rows(tmp_path: Path) -> None:
    path = tmp_path / "work_history.json"
    path.write_text('{"local/tiny-digits": [[20, 1.5], [40, 3.0]]}')
    h = WorkHistory(path)
    assert h.samples(LOCAL.key) == [(20.0, 1.5), (40.0, 3.0)]
    h.observe(LOCAL.key, 20, 2.0)
    h.observe_stopped(LOCAL.key, 20, 4.0)
    h.save()
    again = WorkHistory(path).samples(LOCAL.key)
    assert [s[:2] for s in again] == [(20.0, 1.5), (40.0, 3.0), (20.0, 2.0), (20.0, 4.0)]
    assert [s[3] for s in again[2:]] == [0.0, 1.0]


def test_contention_can_be_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(timebill.CONTENTION_ENV, "3.5")
    assert timebill.host_contention() == 3.5
    monkeypatch.setenv(timebill.CONTENTION_ENV, "0.2")
    assert timebill.host_contention() == 1.0
    monkeypatch.delenv(timebill.CONTENTION_ENV)
    assert timebill.host_contention() >= 1.0
