"""What runs inside a worker (a pool process or a Ray actor): one Gateway, many requests.

Each worker opens its own :class:`~gateway.Gateway` on the shared ledger and audit log (SQLite on one
host, PostgreSQL across hosts), so budgets stay atomic across every worker and every rerun. A request
goes through ``generate`` like any other call: policy, routing, reservation, provenance, audit; the
dataset key is its idempotency key, so a rerun replays what was already paid for.

Under a budget, a time-billed (local) request's reservation is also its deadline. A run stopped there
(``ReservationExhausted``, on a host busier than its history said) is retried once with the same key:
its partial device time was settled as spent and is reported back (``stopped_usd``) for the build to
count, and the gateway has learned from the stop, so the retry reserves more. A second stop, or a
budget that no longer covers the retry, ends the item like any other failure.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client import Gateway

RETRIES_AFTER_STOP = 1  # a request stopped at its reservation is run once more


def _stopped(exc: Exception) -> tuple[bool, Decimal]:
    """Whether a failed request had a run stopped at its reservation, and what its failed attempts kept
    as spent (the ledger settles a stopped or timed-out run at its reservation)."""
    from ..errors import ReservationExhausted

    attempts = getattr(exc, "attempts", ())
    stopped = isinstance(exc, ReservationExhausted) or any(
        a.outcome == ReservationExhausted.__name__ for a in attempts
    )
    charged = sum((a.charged_usd for a in attempts if a.charged_usd is not None), Decimal(0))
    return stopped, charged


class Worker:
    """Holds one Gateway for the life of the worker; ``run`` never raises (errors come back as data)."""

    def __init__(self, job: dict[str, Any]) -> None:
        from ..client import Gateway
        from ..config import Settings

        self.job = job
        self.gateway: Gateway = Gateway(Settings.model_validate(job["settings"]))

    def run(self, task: dict[str, Any]) -> dict[str, Any]:
        from ..errors import GatewayError

        job = self.job
        options = {
            k: v
            for k, v in {
                "model": job.get("model"),
                "provider": job.get("provider"),
                "adapter": job.get("adapter"),
                "steps": job.get("steps"),
                "width": job.get("width"),
                "height": job.get("height"),
                "negative_prompt": task.get("negative_prompt"),
            }.items()
            if v is not None
        }
        spent_on_stops = Decimal(0)
        stops = 0
        while True:
            try:
                result = self.gateway.generate(
                    task["prompt"],
                    n=task["n"],
                    seed=task["seed"],
                    idempotency_key=task["key"],
                    context=job["context"],
                    **options,
                )
                break
            except GatewayError as exc:
                stopped, charged = _stopped(exc)
                spent_on_stops += charged
                if stopped and stops < RETRIES_AFTER_STOP:
                    stops += 1
                    continue
                return {
                    "key": task["key"],
                    "ok": False,
                    "error": type(exc).__name__,
                    "exit_code": exc.exit_code,
                    "message": str(exc),
                    "stopped_usd": str(spent_on_stops),
                    "stops": stops + int(stopped),
                }
        return {
            "key": task["key"],
            "ok": True,
            "images": [img.data for img in result.images],
            "sha256": [img.sha256 for img in result.images],
            "watermark": [img.watermark for img in result.images],
            "c2pa": [img.c2pa for img in result.images],
            "request_id": result.request_id,
            "audit_seq": result.audit_seq,
            "cost_usd": str(result.cost_usd),
            "provider": result.provider,
            "model": result.model,
            "seed": result.seed,
            "replayed": result.replayed,
            "policy_hash": result.decision.policy_hash,
            "stopped_usd": str(spent_on_stops),
            "stops": stops,
        }

    def close(self) -> None:
        self.gateway.close()


# A pool process keeps its worker in a module global (ProcessPoolExecutor's initializer pattern).
_WORKER: Worker | None = None


def init_process(job: dict[str, Any]) -> None:
    global _WORKER
    import atexit

    _WORKER = Worker(job)
    atexit.register(_WORKER.close)


def run_in_process(task: dict[str, Any]) -> dict[str, Any]:
    assert _WORKER is not None, "init_process was not called in this worker"
    return _WORKER.run(task)


__all__ = ["Worker", "init_process", "run_in_process"]
