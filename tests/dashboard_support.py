"""Seed a realistic ledger + audit log through the real Gateway (MockBackend routes, a small catalog).

A few hundred requests over nine days: four teams, three routes (one flaky, so attempts fail, retry
and fall back), a blocklist (denials), budgets (warnings, a refused team), an output classifier that
quarantines some images, and one use case whose prompts policy captures. Time comes from a fake clock
shared by the client and the audit log, so records spread over days without anyone sleeping.
"""

from __future__ import annotations

import datetime as dt
import io
import random
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import MockBackend
from gateway.audit import open_audit
from gateway.backends.base import BackendCall, BackendResult, Usage
from gateway.backends.mock import solid_png
from gateway.catalog import Catalog, ModelCard, ProviderCard
from gateway.client import Gateway
from gateway.config import Settings
from gateway.errors import BackendUnavailable, GatewayError
from gateway.policy.classifiers import register_classifier, unregister_classifier
from gateway.provenance import Provenance
from gateway.retry import RetryPolicy

SRC = {"source": "test", "as_of": "2026-11-01"}
TEAMS = ("design", "marketing", "research", "interns")
USE_CASES = {
    "design": "concept-art",
    "marketing": "marketing",
    "research": "synthetic-data",
    "interns": "playground",
}
PROMPTS = (
    "a lighthouse at dusk",
    "a red bicycle",
    "a paper boat on a pond",
    "a bowl of lemons",
    "a mountain cabin",
    "an old map",
    "a city at night",
    "a fox in the snow",
)
POLICY = """version: 1
rules:
  - {id: no-boats, kind: blocklist, description: test rule, terms: [boat]}
  - {id: no-maps, kind: blocklist, when: {team: interns}, description: test rule, terms: [map]}
  - {id: design-month, kind: budget, when: {team: design}, scope: team, period: month, limit_usd: "6.00",
     warn_at: 0.5}
  - {id: org-total, kind: budget, scope: org, period: total, limit_usd: "100.00"}
  - {id: interns-day, kind: budget, when: {team: interns}, scope: team, period: day, limit_usd: "0.10"}
  - {id: red-images, kind: output_classifier, when: {use_case: marketing}, classifier: dash-red,
     threshold: 0.5, action: quarantine}
  - {id: keep-dataset-prompts, kind: privacy, when: {use_case: synthetic-data}, capture_prompt: true}
"""
NO_SLEEP = RetryPolicy(max_attempts=2, base_backoff_s=0, max_backoff_s=0, max_retry_after_s=0, jitter=False)


def _model(mid: str, usd: str) -> ModelCard:
    pricing: dict[str, Any] = {"unit": "image", "per_image": [{"usd": usd}]}
    if usd.endswith("/s"):  # time-billed: the estimate comes from observed latency, the cost from the call
        pricing = {"unit": "second", "usd_per_second": usd[:-2], "hardware": "gpu", "expected_seconds": 4.0}
    return ModelCard.model_validate(
        {
            "id": mid,
            "name": mid,
            "regions": ["us-east-1"],
            "licence": {"name": "Apache-2.0", "commercial_use": True, **SRC},
            "indemnity": {"level": "none", **SRC},
            "training_data": {"disclosed": True, **SRC},
            "provenance": SRC,
            "moderation": {"provider_side": False, **SRC},
            "pricing": {**pricing, **SRC},
            "capabilities": {"max_images": 4, "min_side": 64, "max_side": 1024},
            "defaults": {"width": 64, "height": 64},
        }
    )


def catalog() -> Catalog:
    return Catalog(
        ProviderCard(provider=p, name=p, models=(_model(m, usd),))
        for p, m, usd in (("alpha", "a-1", "0.02"), ("beta", "b-xl", "0.012/s"), ("gamma", "g-lite", "0.01"))
    )


class _Red:
    """An image classifier for tests: a very light image scores 0.95, anything else 0.05."""

    def scores(self, images: list[bytes]) -> list[float]:
        from PIL import Image

        return [
            0.95 if Image.open(io.BytesIO(b)).convert("L").getpixel((0, 0)) > 240 else 0.05 for b in images
        ]


@contextmanager
def red_classifier() -> Iterator[None]:
    register_classifier("dash-red", "image", _Red)
    try:
        yield
    finally:
        unregister_classifier("dash-red")


class Clock:
    """The shared fake clock: set before each request; every read advances a millisecond."""

    def __init__(self, start: dt.datetime) -> None:
        self.t = start

    def __call__(self) -> dt.datetime:
        self.t += dt.timedelta(milliseconds=1)
        return self.t


def _backend(latency: float, *, flaky: bool = False, jitter: float = 0.0) -> MockBackend:
    calls = {"n": 0}
    rng = random.Random(latency)

    def fn(call: BackendCall) -> BackendResult:
        calls["n"] += 1
        if flaky and (calls["n"] // 2) % 4 == 0:  # two consecutive failures: one failed attempt
            raise BackendUnavailable("503 from the fake provider", provider="gamma")
        r = call.request
        light = 250 if "lemons" in r.prompt else 120  # marketing's lemons come out "red" for the classifier
        images = tuple(solid_png(r.width or 64, r.height or 64, light) for _ in range(r.n))
        elapsed = round(latency * (1 + jitter * (rng.random() - 0.5)), 3)
        return BackendResult(images, Usage(images=r.n, elapsed_s=elapsed), seed=r.seed)

    return MockBackend(fn)


@dataclass
class Seeded:
    home: Path
    ledger_url: str
    audit_url: str
    checkpoints: Path
    start: dt.datetime
    end: dt.datetime
    outcomes: dict[str, int]
    captured_prompt: str
    hidden_prompt: str


def seed(
    home: Path,
    *,
    n: int = 300,
    end: dt.datetime | None = None,
    days: int = 9,
    rng_seed: int = 7,
    ledger_url: str | None = None,
    audit_url: str | None = None,
) -> Seeded:
    """Run ``n`` requests through a real Gateway; returns where the stores are and what happened."""
    end = (end or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    start = end - dt.timedelta(days=days)
    policy = home.parent / "dashboard-policy.yaml"
    home.mkdir(parents=True, exist_ok=True)
    policy.write_text(POLICY)
    ledger_url = ledger_url or f"sqlite:///{home / 'ledger.db'}"
    audit_url = audit_url or f"sqlite:///{home / 'audit.db'}?synchronous=normal"
    settings = Settings(
        home=home,
        policies=(policy,),
        ledger_url=ledger_url,
        audit_url=audit_url,
        provenance={"watermark_remote": False, "c2pa_remote": True},
    )
    clock = Clock(start)
    audit = open_audit(audit_url, checkpoint_dir=home / "checkpoints", clock=clock, checkpoint_every=100)
    rng = random.Random(rng_seed)
    outcomes: dict[str, int] = {}
    backends = {"alpha": _backend(1.2), "beta": _backend(3.4, jitter=0.8), "gamma": _backend(0.6, flaky=True)}
    captured = hidden = ""
    with (
        red_classifier(),
        Gateway(
            settings,
            catalog=catalog(),
            backends=backends,
            audit=audit,
            provenance=Provenance(home, {}),
            retry=NO_SLEEP,
            clock=clock,
            sleep=lambda _s: None,
        ) as gw,
    ):
        for i in range(n):
            clock.t = start + dt.timedelta(seconds=(days * 86_400 - 3_600) * i / n)
            team = rng.choice(TEAMS)
            prompt = f"{rng.choice(PROMPTS)} #{i}"
            hint: dict[str, Any] = {}
            if rng.random() < 0.5:
                hint["provider"] = rng.choice(("alpha", "beta"))
            try:
                gw.generate(
                    prompt,
                    n=rng.choice((1, 1, 2, 4)),
                    team=team,
                    project=f"{team}-p{rng.randint(1, 3)}",
                    use_case=USE_CASES[team],
                    user=f"{team[:3]}-{rng.randint(1, 4)}",
                    **hint,
                )
                kind = "ok"
                if team == "research":
                    captured = prompt
                elif team == "design":
                    hidden = prompt
            except GatewayError as exc:
                kind = type(exc).__name__
            outcomes[kind] = outcomes.get(kind, 0) + 1
    return Seeded(
        home,
        ledger_url,
        audit_url.split("?")[0] if audit_url.startswith("sqlite") else audit_url,
        home / "checkpoints",
        start,
        clock.t,
        outcomes,
        captured,
        hidden,
    )


def run_requests(settings: Settings, telemetry: Any, provenance: Provenance) -> None:
    """One request that succeeds, one that policy denies, one whose only route fails: every metric."""
    policy = settings.home.parent / "metrics-policy.yaml"
    settings.home.mkdir(parents=True, exist_ok=True)
    policy.write_text(POLICY)
    s = settings.model_copy(update={"policies": (policy,)})
    down = MockBackend(lambda call: (_ for _ in ()).throw(BackendUnavailable("down", provider="gamma")))
    backends = {"alpha": _backend(1.0), "beta": _backend(2.0), "gamma": down}
    with (
        red_classifier(),
        Gateway(
            s,
            catalog=catalog(),
            backends=backends,
            telemetry=telemetry,
            provenance=provenance,
            retry=NO_SLEEP,
            sleep=lambda _s: None,
        ) as gw,
    ):
        gw.generate("a bowl of lemons", team="marketing", use_case="marketing", provider="alpha", n=2)
        for prompt, hint in (("a paper boat", "alpha"), ("a lighthouse", "gamma")):
            with suppress(GatewayError):
                gw.generate(prompt, team="design", use_case="concept-art", provider=hint)
