"""Time-billed routes (per second of hardware, per device-hour): an estimate that scales with the work,
and the billed seconds a reservation pays for.

Why both halves: a budget is a hard stop only if what is reserved bounds what is spent. On a per-image
route that holds by construction (n x the tier price). On a time-billed route the bill is the time the
run takes, so

* the estimate must grow with the work: images x denoising steps (``work_units``), priced at the
  seconds per unit this route has actually taken, times :data:`MARGIN`: the higher of the p90 over its
  remembered calls and the slowest of its last :data:`RECENT` calls (a host that just got busier shows
  there first), never below what equal-or-smaller calls took (a fixed start-up cost per call does not
  shrink with the work), and never below the card's conservative ``expected_seconds`` scaled from the
  card's default request (the only figure before there is history);
* on a CPU route that runs on this host, every figure is in *uncontended* seconds: each observation is
  divided by the host's contention when it was made (1-minute load average per core, at least 1) and
  the estimate is multiplied by the contention now. The same tiny-digits call takes ten times longer
  at load 20 on two cores than on an idle host, and history learned at one load must not size a call
  made at another (``GATEWAY_HOST_CONTENTION`` pins the figure where the load average is not this
  process's share, e.g. in a container with a CPU quota);
* the run must stop when the reservation is used up: :func:`seconds_for` turns the reserved amount back
  into billed seconds, which the gateway hands the backend as ``BackendCall.max_billed_s`` (the local
  backend stops between denoising steps, Replicate cancels the prediction). A settle that still comes
  in above the reservation (the last step or the cancel took a moment) is capped at it and the audit
  record keeps the provider's figure;
* a run stopped that way is remembered too (:meth:`WorkHistory.observe_stopped`): it needed more than
  its reservation, so its sample counts as :data:`STOPPED_GROWTH` times the seconds it was allowed, and a
  retry reserves at least that much more (its partial device time was settled as spent: the ledger, not
  the history, says what was paid).

History lives in a small JSON file beside the route statistics: it is a sizing hint per host (local
hardware differs per host anyway); the ledger, not this file, is what must be exact.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from ..catalog import Route
from ..types import ImageRequest, atomic_write

MARGIN = 1.5  # head-room over the seconds-per-unit seen on the route
MIN_SAMPLES = 3  # fewer observed calls than this: the card's figure alone
HISTORY = 200  # calls remembered per route
RECENT = 10  # the slowest of this many latest calls also bounds the estimate
CONTENTION_ENV = "GATEWAY_HOST_CONTENTION"
STOPPED_GROWTH = 2.0  # a run stopped at its reservation needed more: count it as this many times that

# (work units, billed seconds[, host contention when observed[, 1.0 if stopped at its reservation]])
Sample = tuple[float, ...]


def time_billed(route: Route) -> bool:
    return route.card.pricing.unit in ("second", "hour")


def work_units(route: Route, request: ImageRequest) -> int:
    """Images x denoising steps the call will run (the card's default steps where the request has none;
    1 for models without a step count)."""
    steps = request.steps or route.card.defaults.steps or 1
    return max(1, request.n) * max(1, steps)


def _default_units(route: Route) -> int:
    return max(1, route.card.defaults.steps or 1)


def runs_on_host_cpu(route: Route) -> bool:
    """Whether the route's billed time is this host's CPU time (so the host's load stretches it)."""
    return route.provider == "local" and (route.card.pricing.hardware or "cpu").lower() == "cpu"


def host_contention() -> float:
    """Runnable work per core over the last minute, at least 1 (1 = an idle or fully owned host).

    ``GATEWAY_HOST_CONTENTION`` pins it: for a container whose load average is the whole host's, or
    a host where a fixed figure is known to be right.
    """
    pinned = os.environ.get(CONTENTION_ENV)
    if pinned:
        try:
            return max(1.0, float(pinned))
        except ValueError:
            pass
    try:
        return max(1.0, os.getloadavg()[0] / max(1, os.cpu_count() or 1))
    except OSError:  # no load average on this platform
        return 1.0


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, -(-9 * len(ordered) // 10) - 1)]


def _uncontended(sample: Sample, scale: bool) -> tuple[float, float]:
    """(units, seconds) of a sample, its seconds divided by its contention on a host-CPU route; a stopped
    run counts as :data:`STOPPED_GROWTH` times the seconds it was allowed."""
    units, seconds = float(sample[0]), float(sample[1])
    contention = float(sample[2]) if len(sample) > 2 and scale else 1.0
    if len(sample) > 3 and sample[3]:
        seconds *= STOPPED_GROWTH
    return units, seconds / max(1.0, contention)


def expected_seconds(
    route: Route,
    request: ImageRequest,
    samples: Sequence[Sample] = (),
    contention: float | None = None,
) -> float:
    """An upper bound on the billed seconds of ``request`` on ``route`` (see the module docstring).

    ``contention`` is the host's now (measured when None); it only applies to host-CPU routes.
    """
    units = work_units(route, request)
    scale = runs_on_host_cpu(route)
    now = (host_contention() if contention is None else max(1.0, contention)) if scale else 1.0
    floor = route.card.pricing.expected_seconds * units / _default_units(route) * now
    usable = [
        (_uncontended(s, scale), len(s) > 3 and bool(s[3]))
        for s in samples
        if len(s) >= 2 and s[0] > 0 and s[1] >= 0 and math.isfinite(s[1])
    ]
    # A recent stop bounds the estimate even before there is enough history for a percentile.
    stops = [s / u for (u, s), stopped in usable[-RECENT:] if stopped]
    estimate = max(stops, default=0.0) * units
    if len(usable) >= MIN_SAMPLES:
        per_unit = [s / u for (u, s), _ in usable]
        estimate = max(estimate, p90(per_unit) * units, max(per_unit[-RECENT:]) * units)
        smaller = [s for (u, s), _ in usable if u <= units]
        if smaller:
            estimate = max(estimate, p90(smaller))
    return max(estimate * now * MARGIN, floor)


def seconds_for(route: Route, amount_usd: Decimal) -> float:
    """The billed seconds ``amount_usd`` pays for on ``route`` (infinite for a free rate)."""
    p = route.card.pricing
    if p.unit == "second" and p.usd_per_second is not None:
        return float(amount_usd / p.usd_per_second) if p.usd_per_second > 0 else math.inf
    if p.unit == "hour" and p.usd_per_hour is not None:
        return float(amount_usd * 3600 / p.usd_per_hour) if p.usd_per_hour > 0 else math.inf
    raise ValueError(f"{route.key}: pricing unit {p.unit} is not time-based")


class WorkHistory:
    """Recent (work units, billed seconds, contention, stopped) per time-billed route, persisted as JSON
    (merged, last wins)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._samples: dict[str, list[Sample]] = {}
        if path is not None and path.is_file():
            try:
                raw = json.loads(path.read_text())
                self._samples = {
                    str(k): [tuple(float(x) for x in row[:4]) for row in v if len(row) >= 2][-HISTORY:]
                    for k, v in raw.items()
                }
            except (ValueError, TypeError, OSError):
                self._samples = {}

    def samples(self, key: str) -> list[Sample]:
        with self._lock:
            return list(self._samples.get(key, ()))

    def observe(self, key: str, units: int, seconds: float, *, stopped: bool = False) -> None:
        """Remember one call (its host contention is measured now)."""
        if units <= 0 or not math.isfinite(seconds) or seconds < 0:
            return
        sample = (float(units), float(seconds), round(host_contention(), 3), 1.0 if stopped else 0.0)
        with self._lock:
            rows = self._samples.setdefault(key, [])
            rows.append(sample)
            del rows[:-HISTORY]

    def observe_stopped(self, key: str, units: int, allowed_s: float) -> None:
        """A run stopped after the ``allowed_s`` its reservation paid for: it needed more than that."""
        self.observe(key, units, allowed_s, stopped=True)

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
    "CONTENTION_ENV",
    "MARGIN",
    "STOPPED_GROWTH",
    "WorkHistory",
    "expected_seconds",
    "host_contention",
    "p90",
    "runs_on_host_cpu",
    "seconds_for",
    "time_billed",
    "work_units",
]
