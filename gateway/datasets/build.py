"""``gateway dataset build``: plan the items, skip what is done, run the rest, write the folder.

A build never pays twice: each request's idempotency key is derived from the spec digest, the label
and the request's index, so a rerun after a crash, a kill or a budget stop replays finished requests
from the gateway's archive (cost 0) and pays only for the missing ones. The spec's ``budget_usd``
becomes a ``total`` budget on the dataset's project in the ledger, so it is a hard stop across every
worker and every rerun; a stop ends with exit 4 and keeps everything already paid for.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .executors import executor
from .gates import Deduper, Hook, load_hook, phash
from .output import BuildFolder, rows_for
from .plan import RequestItem, plan
from .spec import DatasetSpec, load_spec


@dataclass
class BuildResult:
    name: str
    out: str
    digest: str
    executor: str
    workers: int
    planned_images: int
    images: int = 0
    dropped: int = 0
    requests_run: int = 0
    requests_replayed: int = 0
    requests_skipped: int = 0
    cost_usd_run: Decimal = Decimal(0)
    cost_usd_total: str = "0"
    elapsed_s: float = 0.0
    stopped: str | None = None
    exit_code: int = 0
    errors: list[str] = field(default_factory=list)
    images_made: int = 0  # images that came back from the gateway in this run (paid or replayed)
    stopped_runs: int = 0  # runs stopped at their reservation (paid, retried once; see worker.py)

    @property
    def images_per_s(self) -> float:
        return self.images_made / self.elapsed_s if self.elapsed_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "out": self.out,
            "spec_digest": self.digest,
            "executor": self.executor,
            "workers": self.workers,
            "planned_images": self.planned_images,
            "images": self.images,
            "dropped": self.dropped,
            "requests_run": self.requests_run,
            "requests_replayed": self.requests_replayed,
            "requests_skipped": self.requests_skipped,
            "stopped_runs": self.stopped_runs,
            "cost_usd_this_run": str(self.cost_usd_run),
            "cost_usd_total": self.cost_usd_total,
            "images_per_s": round(self.images_per_s, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "complete": self.stopped is None and self.images + self.dropped == self.planned_images,
            "stopped": self.stopped,
            "errors": self.errors[:20],
        }


def budget_policy(spec: DatasetSpec) -> str:
    """The spec's budget as a policy rule: a ledger-enforced total for the dataset's project."""
    return (
        "version: 1\nrules:\n"
        f"  - id: dataset-{spec.name}-budget\n"
        "    kind: budget\n"
        f"    description: budget_usd of the dataset spec {spec.name}\n"
        f"    when: {{project: {spec.project!r}}}\n"
        "    scope: project\n"
        "    period: total\n"
        f"    limit_usd: '{spec.budget_usd}'\n"
    )


class _Progress:
    """items, images/s, spend vs budget, ETA on stderr (tqdm); quiet when stderr is not wanted."""

    def __init__(self, total: int, done: int, budget: Decimal | None, enabled: bool) -> None:
        self.budget = budget
        self.spent = Decimal(0)
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=done, unit="img", file=sys.stderr, dynamic_ncols=True, mininterval=1.0
            )

    def update(self, images: int, cost: Decimal) -> None:
        self.spent += cost
        if self.bar is not None:
            budget = f" / ${self.budget}" if self.budget is not None else ""
            self.bar.set_postfix_str(f"spent ${self.spent:.6f}{budget}", refresh=False)
            self.bar.update(images)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build(
    spec_path: str | Path,
    out: str | Path,
    *,
    executor_name: str = "local",
    workers: int = 1,
    config: str | Path | None = None,
    force_new: bool = False,
    progress: bool = True,
) -> BuildResult:
    """Build (or continue building) the dataset of ``spec_path`` into ``out``."""
    from ..catalog import Catalog
    from ..config import Settings

    spec = load_spec(spec_path)
    spec_text = Path(spec_path).read_text(encoding="utf-8")
    hook = load_hook(spec.quality.hook) if spec.quality.hook else None
    runner = executor(executor_name, workers)
    folder = BuildFolder(Path(out))
    previous = folder.state()
    if previous is not None and previous.get("digest") != spec.digest:
        if folder.done() and not force_new:
            raise UsageError(
                f"{out}: the spec changes items this folder already holds (digest "
                f"{str(previous.get('digest'))[:16]} -> {spec.digest[:16]}); rerun with --force-new to start "
                "a new build (the old outputs are moved to .previous/, nothing paid is deleted)"
            )
        if folder.done():
            folder.set_aside(str(previous["digest"]))
    folder.write_state(spec)

    settings = Settings.load(config)
    if spec.budget_usd is not None:
        policy = folder.build / "budget-policy.yaml"
        from ..types import atomic_write

        atomic_write(policy, budget_policy(spec).encode())
        settings = settings.model_copy(update={"policies": (*settings.policy_paths, policy)})
    requests = plan(spec)
    done = _verified_done(folder, requests)
    todo = [r for r in requests if r.key not in done]
    result = BuildResult(
        spec.name, str(out), spec.digest, runner.name, runner.workers, spec.total_images,
        requests_skipped=len(requests) - len(todo),
    )  # fmt: skip
    job = {
        "settings": settings.model_dump(mode="json"),
        "model": spec.model,
        "provider": spec.provider,
        "adapter": spec.adapter,
        "steps": spec.steps,
        "width": spec.width,
        "height": spec.height,
        "context": {
            "team": spec.context.team,
            "project": spec.project,
            "use_case": spec.context.use_case,
            "user": spec.context.user,
        },
    }
    by_key = {r.key: r for r in requests}
    images_done = sum(len(r.images) for r in requests if r.key in done)
    bar = _Progress(spec.total_images, images_done, spec.budget_usd, progress)
    started = time.monotonic()

    def on_result(res: dict[str, Any]) -> bool:
        item = by_key[res["key"]]
        stopped_usd = Decimal(str(res.get("stopped_usd") or 0))
        if res.get("stops") or stopped_usd > 0:  # paid device time that gave no image: counted
            folder.append_stopped({"key": item.key, "runs": int(res["stops"]), "cost_usd": str(stopped_usd)})
            result.stopped_runs += int(res["stops"])
            result.cost_usd_run += stopped_usd
            bar.update(0, stopped_usd)
        if not res["ok"]:
            result.errors.append(f"{item.label}/{item.j}: {res['error']}: {res['message']}")
            if result.stopped is None:
                result.stopped, result.exit_code = res["error"], int(res["exit_code"])
            return False
        record = _record(folder, item, res, hook)
        folder.append_done(record)
        done[item.key] = record
        cost = Decimal(str(res["cost_usd"]))
        if res["replayed"]:
            result.requests_replayed += 1
        else:
            result.requests_run += 1
            result.cost_usd_run += cost
        result.images_made += item.n
        bar.update(item.n, Decimal(0) if res["replayed"] else cost)
        return result.stopped is None

    try:
        if todo:
            runner.run(job, (r.to_task() for r in todo), on_result)
    finally:
        bar.close()
        result.elapsed_s = time.monotonic() - started
        rows, dropped = _listed(spec, requests, done)
        cards = _cards(Catalog.load(settings.provider_paths), done.values())
        complete = result.stopped is None and len(done) == len(requests)
        manifest = folder.finalize(spec, spec_text, rows, dropped, done, cards, complete)
        result.images, result.dropped = len(rows), len(dropped)
        result.cost_usd_total = manifest["cost_usd"]
    return result


def _verified_done(folder: BuildFolder, requests: list[RequestItem]) -> dict[str, dict[str, Any]]:
    """Finished requests whose image files are still there and intact (others are replayed for free)."""
    keys = {r.key for r in requests}
    out = {}
    for key, rec in folder.done().items():
        if key in keys and all(folder.image_ok(i["path"], i["sha256"]) for i in rec.get("images", [])):
            out[key] = rec
    return out


def _record(
    folder: BuildFolder, item: RequestItem, res: Mapping[str, Any], hook: Hook | None
) -> dict[str, Any]:
    images = []
    for img, data, sha, wm, c2 in zip(
        item.images, res["images"], res["sha256"], res["watermark"], res["c2pa"], strict=True
    ):
        path = folder.image_path(img.split, img.label, img.id)
        folder.write_image(path, data)
        meta: dict[str, Any] = {
            "id": img.id,
            "path": str(path.relative_to(folder.root)),
            "sha256": sha,
            "phash": phash(data),
            "watermark": wm,
            "c2pa": c2,
        }
        if hook is not None:
            meta["score"] = float(hook(data, {"id": img.id, "label": img.label, "prompt": item.prompt}))
        images.append(meta)
    return {
        "key": item.key,
        "label": item.label,
        "j": item.j,
        "prompt": item.prompt,
        "images": images,
        **{
            k: res[k]
            for k in ("request_id", "audit_seq", "cost_usd", "provider", "model", "seed", "policy_hash")
        },
    }


def _listed(
    spec: DatasetSpec, requests: list[RequestItem], done: Mapping[str, Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Apply the quality gates over finished requests in plan order (deterministic across executors)."""
    q = spec.quality
    dedupe = Deduper(q.dedupe_hamming) if q.dedupe_hamming is not None else None
    listed, dropped = [], []
    for item in sorted(requests, key=lambda r: ([c.label for c in spec.classes].index(r.label), r.j)):
        rec = done.get(item.key)
        if rec is None:
            continue
        for row, meta in zip(rows_for(item, rec), rec["images"], strict=True):
            reason = None
            if q.hook and float(meta.get("score", 0.0)) < q.min_score:
                reason = f"score {meta.get('score')} < {q.min_score}"
            elif dedupe is not None:
                twin = dedupe.seen(item.label, str(meta["phash"]))
                if twin is not None:
                    reason = f"near-duplicate (phash {meta['phash']} ~ {twin})"
            if reason:
                dropped.append({**row, "reason": reason})
            else:
                listed.append(row)
    return listed, dropped


def _cards(catalog: Any, records: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        key = f"{rec['provider']}/{rec['model']}"
        if key in out:
            continue
        route = catalog.get(key)
        if route is None:
            out[key] = {}
            continue
        card = route.card
        td = card.training_data
        commercial = "yes" if card.licence.commercial_use else "no"
        out[key] = {
            "licence": f"{card.licence.name} (commercial use: {commercial})",
            "indemnity": card.indemnity.level,
            "training_data": td.summary or ("disclosed" if td.disclosed else "not disclosed"),
        }
    return out


__all__ = ["BuildResult", "budget_policy", "build"]
