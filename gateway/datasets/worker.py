"""What runs inside a worker (a pool process or a Ray actor): one Gateway, many requests.

Each worker opens its own :class:`~gateway.Gateway` on the shared ledger and audit log (SQLite on one
host, PostgreSQL across hosts), so budgets stay atomic across every worker and every rerun. A request
goes through ``generate`` like any other call: policy, routing, reservation, provenance, audit; the
dataset key is its idempotency key, so a rerun replays what was already paid for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client import Gateway


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
        try:
            result = self.gateway.generate(
                task["prompt"],
                n=task["n"],
                seed=task["seed"],
                idempotency_key=task["key"],
                context=job["context"],
                **options,
            )
        except GatewayError as exc:
            return {
                "key": task["key"],
                "ok": False,
                "error": type(exc).__name__,
                "exit_code": exc.exit_code,
                "message": str(exc),
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
