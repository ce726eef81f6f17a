"""Time-billed routes (per second of hardware, per device-hour): an estimate that scales with the work,
and the billed seconds a reservation pays for.

Why both halves: a budget is a hard stop only if what is reserved bounds what is spent. On a per-image
route that holds by construction (n x the tier price). On a time-billed route the bill is the time the
run takes, so

* the estimate must grow with the work: images x denoising steps (``work_units``), priced at the
  seconds per unit this route has actually taken (nearest-rank p90 over its recent calls, times
  :data:`MARGIN`, never below what equal-or-smaller calls took, since a fixed start-up cost per call
  does not shrink with the work), or the card's conservative ``expected_seconds`` scaled from the card's
  default request before there is history;
* the run must stop when the reservation is used up: :func:`seconds_for` turns the reserved amount back
  into billed seconds, which the gateway hands the backend as ``BackendCall.max_billed_s`` (the local
  backend stops between denoising steps, Replicate cancels the prediction). A settle that still comes
  in above the reservation (the last step or the cancel took a moment) is capped at it and the audit
  record keeps the provider's figure.

History lives in a small JSON file beside the route statistics: it is a sizing hint per host (local
hardware differs per host anyway); the ledger, not this file, is what must be exact.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from ..catalog import Route
from ..types import ImageRequest, atomic_write

MARGIN = 1.5  # head-room over the p90 seconds-per-unit seen on the route
MIN_SAMPLES = 3  # fewer observed calls than this: use the card's figure
HISTORY = 200  # calls remembered per route

Sample = tuple[int, float]  # (work units, billed seconds)


def time_billed(route: Route) -> bool:
    return route.card.pricing.unit in ("second", "hour")


def work_units(route: Route, request: ImageRequest) -> int:
    """Images x denoising steps the call will run (the card's default steps where the request has none;
    1 for models without a step count)."""
    steps = request.steps or route.card.defaults.steps or 1
    return max(1, request.n) * max(1, steps)


def _default_units(route: Route) -> int:
    return max(1, route.card.defaults.steps or 1)


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, -(-9 * len(ordered) // 10) - 1)]


def expected_seconds(route: Route, request: ImageRequest, samples: Sequence[Sample] = ()) -> float:
    """An upper bound on the billed seconds of ``request`` on ``route`` (see the module docstring)."""
    units = work_units(route, request)
    usable = [(u, s) for u, s in samples if u > 0 and s >= 0]
    if len(usable) < MIN_SAMPLES:
        return route.card.pricing.expected_seconds * units / _default_units(route)
    estimate = p90([s / u for u, s in usable]) * units
    smaller = [s for u, s in usable if u <= units]
    if smaller:
        estimate = max(estimate, p90(smaller))
    return estimate * MARGIN


def seconds_for(route: Route, amount_usd: Decimal) -> float:
    """The billed seconds ``amount_usd`` pays for on ``route`` (infinite for a free rate)."""
    p = route.card.pricing
    if p.unit == "second" and p.usd_per_second is not None:
        return float(amount_usd / p.usd_per_second) if p.usd_per_second > 0 else math.inf
    if p.unit == "hour" and p.usd_per_hour is not None:
        return float(amount_usd * 3600 / p.usd_per_hour) if p.usd_per_hour > 0 else math.inf
    raise ValueError(f"{route.key}: pricing unit {p.unit} is not time-based")


class WorkHistory:
    """Recent (work units, billed seconds) per time-billed route, persisted as JSON (merged, last wins)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._samples: dict[str, list[Sample]] = {}
        if path is not None and path.is_file():
            try:
                raw = json.loads(path.read_text())
                self._samples = {
                    str(k): [(int(u), float(s)) for u, s in v][-HISTORY:] for k, v in raw.items()
                }
            except (ValueError, TypeError, OSError):
                self._samples = {}

    def samples(self, key: str) -> list[Sample]:
        with self._lock:
            return list(self._samples.get(key, ()))

    def observe(self, key: str, units: int, seconds: float) -> None:
        if units <= 0 or not math.isfinite(seconds) or seconds < 0:
            return
        with self._lock:
            rows = self._samples.setdefault(key, [])
            rows.append((units, seconds))
            del rows[:-HISTORY]

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            data = json.dumps({k: [list(s) for s in v] for k, v in sorted(self._samples.items())}).encode()
        try:
            atomic_write(self.path, data)
        except OSError:  # a sizing hint; never fail a request over it
            return


__all__ = [
    "MARGIN",
    "WorkHistory",
    "expected_seconds",
    "p90",
    "seconds_for",
    "time_billed",
    "work_units",
]
