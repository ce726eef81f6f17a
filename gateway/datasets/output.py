"""The build folder: images, labels, manifest, dataset card, and the resumable record behind them.

Layout::

    DIR/images/<split>/<label>/<id>.png    each written atomically (temp file + rename)
    DIR/labels.jsonl  (+ labels.parquet)   one line per listed image, in plan order
    DIR/dropped.jsonl                      images a quality gate dropped (paid, kept, not re-bought)
    DIR/manifest.json                      totals and a Merkle root over every listed item
    DIR/README.md                          the dataset card
    DIR/.build/state.json                  the spec digest and item fields this folder was built from
    DIR/.build/done.jsonl                  one line per finished request (append-only, fsynced)
    DIR/.build/stopped.jsonl               one line per request whose run(s) stopped at their reservation
                                           (paid device time that produced no image; append-only)

Only the two ``.jsonl`` files under ``.build/`` are appended during a build; a kill can at worst leave
a last line torn, which is ignored (a finished request is then replayed from the gateway's archive at
no cost). Everything else is rewritten whole and atomically at the end of every run, so a killed build
never leaves a half file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..types import atomic_write, atomic_writer
from .plan import RequestItem
from .spec import DatasetSpec

BUILD = ".build"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # a torn last line after a kill
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


class BuildFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.build = root / BUILD
        self.done_path = self.build / "done.jsonl"
        self.stopped_path = self.build / "stopped.jsonl"

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any] | None:
        path = self.build / "state.json"
        if not path.exists():
            return None
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def write_state(self, spec: DatasetSpec) -> None:
        self.build.mkdir(parents=True, exist_ok=True)
        doc = {"digest": spec.digest, "items": spec.item_fields()}
        atomic_write(self.build / "state.json", (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())

    def done(self) -> dict[str, dict[str, Any]]:
        """key -> finished-request record; a torn last line (a kill mid-write) is ignored."""
        return {str(rec["key"]): rec for rec in _read_jsonl(self.done_path) if "key" in rec}

    def stopped(self) -> list[dict[str, Any]]:
        """Runs stopped at their reservation: what each cost (settled as spent, no image came back)."""
        return [rec for rec in _read_jsonl(self.stopped_path) if "cost_usd" in rec]

    def append_done(self, record: Mapping[str, Any]) -> None:
        self._append(self.done_path, record)

    def append_stopped(self, record: Mapping[str, Any]) -> None:
        self._append(self.stopped_path, record)

    def _append(self, path: Path, record: Mapping[str, Any]) -> None:
        self.build.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(_canonical(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def set_aside(self, digest: str) -> Path:
        """Move a previous build's outputs to ``.previous/<digest16>/`` (``--force-new``): kept, unlisted."""
        dest = self.root / ".previous" / digest[:16]
        dest.mkdir(parents=True, exist_ok=True)
        for name in (
            "images",
            "labels.jsonl",
            "labels.parquet",
            "dropped.jsonl",
            "manifest.json",
            "README.md",
            BUILD,
        ):
            src = self.root / name
            if src.exists():
                shutil.move(str(src), str(dest / name))
        return dest

    # ------------------------------------------------------------------ images

    def image_path(self, split: str, label: str, image_id: str) -> Path:
        return self.root / "images" / split / label / f"{image_id}.png"

    def write_image(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)

    def image_ok(self, rel: str, sha256: str) -> bool:
        path = self.root / rel
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
        except OSError:
            return False

    # ------------------------------------------------------------------ final files

    def finalize(
        self,
        spec: DatasetSpec,
        spec_text: str,
        rows: Sequence[dict[str, Any]],
        dropped: Sequence[dict[str, Any]],
        done: Mapping[str, Mapping[str, Any]],
        cards: Mapping[str, Mapping[str, Any]],
        complete: bool,
    ) -> dict[str, Any]:
        from ..audit.merkle import leaf_hash, root

        with atomic_writer(self.root / "labels.jsonl", "w") as fh:
            for row in rows:
                fh.write(_canonical(row) + "\n")
        with atomic_writer(self.root / "dropped.jsonl", "w") as fh:
            for row in dropped:
                fh.write(_canonical(row) + "\n")
        parquet = _write_parquet(self.root / "labels.parquet", rows)
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(row["label"], {}).setdefault(row["split"], 0)
            counts[row["label"]][row["split"]] += 1
        cost = sum((Decimal(str(r.get("cost_usd", 0))) for r in done.values()), Decimal(0))
        stopped = self.stopped()
        stopped_cost = sum((Decimal(str(r["cost_usd"])) for r in stopped), Decimal(0))
        manifest = {
            "name": spec.name,
            "spec_digest": spec.digest,
            "complete": complete,
            "images": len(rows),
            "dropped": len(dropped),
            "requests": len(done),
            "counts": counts,
            "cost_usd": f"{cost + stopped_cost:.6f}",  # everything paid, stopped runs included
            "stopped_runs": sum(int(r.get("runs", 1)) for r in stopped),
            "stopped_runs_cost_usd": f"{stopped_cost:.6f}",
            "items_root": root([leaf_hash(_canonical(r).encode()) for r in rows]).hex(),
            "models": sorted({str(r["model"]) for r in rows}),
            "policy_hashes": sorted({str(r["policy_hash"]) for r in done.values() if r.get("policy_hash")}),
            "provenance": _provenance(rows),
            "parquet": parquet,
            "written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        atomic_write(
            self.root / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        )
        atomic_write(self.root / "README.md", dataset_card(spec, spec_text, manifest, cards).encode())
        return manifest


def _provenance(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {"watermark": {}, "c2pa": {}}
    for r in rows:
        for k in ("watermark", "c2pa"):
            v = str(r.get(k))
            out[k][v] = out[k].get(v, 0) + 1
    return out


def _write_parquet(path: Path, rows: Sequence[Mapping[str, Any]]) -> bool:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    table = pa.Table.from_pylist([dict(r) for r in rows]) if rows else pa.table({})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return True


def dataset_card(
    spec: DatasetSpec, spec_text: str, manifest: Mapping[str, Any], cards: Mapping[str, Mapping[str, Any]]
) -> str:
    """The README a reviewer reads: purpose, spec, models and licences, provenance, counts, cost, citation."""
    lines = [
        f"# {spec.name}",
        "",
        spec.description
        or "A synthetic image dataset built by diffusion-gateway under policy, budget and audit.",
        "",
        "## Status",
        "",
        f"- {'complete' if manifest['complete'] else 'INCOMPLETE (the build stopped; rerun it to continue)'}",
        f"- images listed: {manifest['images']}; dropped by quality gates: {manifest['dropped']}",
        f"- requests: {manifest['requests']}; total cost: ${manifest['cost_usd']}"
        + (
            f" (of which ${manifest['stopped_runs_cost_usd']} for {manifest['stopped_runs']} run(s) stopped"
            " at their reservation and run again)"
            if manifest.get("stopped_runs")
            else ""
        ),
        f"- spec digest: `{manifest['spec_digest']}`; items root: `{manifest['items_root']}`",
        "",
        "## Counts",
        "",
        "| label | " + " | ".join(sorted(spec.split)) + " |",
        "|---|" + "---|" * len(spec.split),
    ]
    for c in spec.classes:
        per = manifest["counts"].get(c.label, {})
        lines.append(f"| {c.label} | " + " | ".join(str(per.get(s, 0)) for s in sorted(spec.split)) + " |")
    lines += ["", "## Models and licences", ""]
    for key, card in sorted(cards.items()):
        lines.append(
            f"- `{key}`: licence {card.get('licence', '?')}; indemnity {card.get('indemnity', '?')}; "
            f"training data: {card.get('training_data', '?')}"
        )
    lines += [
        "",
        "## Provenance",
        "",
        "Every image went through the gateway: policy decision, budget reservation, an invisible watermark "
        "and a signed C2PA manifest, and a hash-chained audit record (its `audit_seq` is in labels.jsonl). "
        f"Policy hashes: {', '.join(f'`{h[:16]}`' for h in manifest['policy_hashes']) or '-'}.",
        "",
        f"- watermark: {manifest['provenance']['watermark']}",
        f"- C2PA: {manifest['provenance']['c2pa']}",
        "",
        "## Spec",
        "",
        "```yaml",
        spec_text.rstrip(),
        "```",
        "",
        "## How to cite",
        "",
        "```",
        f"{spec.name}, synthetic dataset, spec digest {manifest['spec_digest']},",
        f"items root {manifest['items_root']}, generated with diffusion-gateway ({manifest['written']}).",
        "```",
        "",
    ]
    return "\n".join(lines)


def rows_for(item: RequestItem, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """labels.jsonl rows of one finished request (before quality gates)."""
    from decimal import Decimal

    out = []
    per_image = (Decimal(str(record["cost_usd"])) / max(1, len(item.images))).quantize(Decimal("1e-9"))
    for img, meta in zip(item.images, record["images"], strict=True):
        out.append(
            {
                "id": img.id,
                "path": meta["path"],
                "label": img.label,
                "split": img.split,
                "sha256": meta["sha256"],
                "prompt": item.prompt,
                "seed": record["seed"],
                "model": record["model"],
                "provider": record["provider"],
                "cost_usd": str(per_image),
                "request_id": record["request_id"],
                "audit_seq": record["audit_seq"],
                "watermark": meta.get("watermark"),
                "c2pa": meta.get("c2pa"),
            }
        )
    return out


__all__ = ["BuildFolder", "dataset_card", "rows_for"]
