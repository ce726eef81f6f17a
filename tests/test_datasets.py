"""The dataset builder end to end on the real tiny-digits model: plan, build, resume, budget, gates, Ray."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main
from gateway.datasets import build, load_spec, spec_schema
from gateway.datasets.plan import plan
from gateway.errors import ConfigError, UsageError

SPEC: dict[str, Any] = {
    "name": "digits-test",
    "model": "tiny-digits",
    "seed": 3,
    "split": {"train": 0.75, "val": 0.25},
    "images_per_request": 2,
    "classes": [
        {"label": "1", "prompts": ["a handwritten 1"], "count": 4},
        {"label": "7", "prompts": ["a handwritten 7", "the digit 7"], "count": 4},
    ],
}


def write_spec(path: Path, **changes: Any) -> Path:
    doc = json.loads(json.dumps(SPEC))
    doc.update(changes)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_config(tmp_path: Path, home: Path) -> Path:
    # A short claim lease so a request killed mid-flight stops blocking its key within seconds.
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump({"home": str(home), "idempotency": {"lease_s": 3, "wait_s": 120}}))
    return cfg


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``gateway ARGS`` through the real entry point (errors become exit codes there)."""
    capsys.readouterr()
    try:
        code = int(main(args) or 0)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def labels(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]


def settled(home: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(home / "ledger.db")
    try:
        return list(
            conn.execute("SELECT request_id, actual_micros FROM ledger_requests WHERE status = 'settled'")
        )
    finally:
        conn.close()


def paid_once(home: Path, rows: list[dict[str, Any]]) -> None:
    """Every listed image's request was settled exactly once in the ledger."""
    counts: dict[str, int] = {}
    for rid, _ in settled(home):
        base = rid.rsplit(".", 1)[0]
        counts[base] = counts.get(base, 0) + 1
    for row in rows:
        assert counts.get(row["request_id"]) == 1, (row["id"], counts.get(row["request_id"]))


# --------------------------------------------------------------------------- spec and plan (no model)


def test_bad_specs_are_file_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nmodel: tiny-digits\nsplit: {train: 0.5, val: 0.2}\n"
        "classes:\n  - {label: '1', prompts: [a], count: 1}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_spec(bad)
    assert str(exc.value).startswith(f"{bad}:3:") and "sum to 1" in str(exc.value)
    dup = write_spec(tmp_path / "dup.yaml", classes=[SPEC["classes"][0], SPEC["classes"][0]])
    with pytest.raises(ConfigError, match="unique"):
        load_spec(dup)
    code, _, err = run(["dataset", "build", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"{bad}:3:" in err


def test_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    import jsonschema

    schema = spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(SPEC, schema)
    code, out, _ = run(["dataset", "schema"], capsys)
    assert code == 0 and json.loads(out)["title"].endswith("dataset spec")


def test_plan_is_deterministic_and_counts_extend_it(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "s.yaml"))
    first, again = plan(spec), plan(load_spec(write_spec(tmp_path / "s2.yaml")))
    assert first == again
    assert [r.label for r in first] == ["1", "7", "1", "7"]  # interleaved: a partial build is balanced
    assert first[1].prompt == "a handwritten 7" and first[3].prompt == "the digit 7"
    assert len({r.key for r in first}) == 4 and all(
        r.key.startswith(f"dataset:{spec.digest[:16]}:") for r in first
    )
    bigger = load_spec(
        write_spec(tmp_path / "b.yaml", classes=[{**SPEC["classes"][0], "count": 6}, SPEC["classes"][1]])
    )
    assert bigger.digest == spec.digest  # counts are not part of what defines an item
    assert set(first) <= set(plan(bigger))
    changed = load_spec(write_spec(tmp_path / "c.yaml", seed=4))
    assert changed.digest != spec.digest


# --------------------------------------------------------------------------- builds on the real model


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 8-image build shared by the read-only checks below (a build costs real model time)."""
    root = tmp_path_factory.mktemp("built")
    home = root / "home"
    os.environ["GATEWAY_HOME"] = str(home)
    try:
        spec = write_spec(root / "spec.yaml")
        result = build(spec, root / "out", config=write_config(root, home), progress=False)
    finally:
        os.environ.pop("GATEWAY_HOME", None)
    assert result.exit_code == 0 and result.images == 8
    return {"root": root, "home": home, "out": root / "out", "spec": spec}


def test_build_writes_images_labels_manifest_and_card(built: dict[str, Path]) -> None:
    out = built["out"]
    rows = labels(out)
    assert len(rows) == 8 and {r["label"] for r in rows} == {"1", "7"}
    for r in rows:
        path = out / r["path"]
        assert path.parts[-3] == r["split"] and path.parts[-2] == r["label"]
        import hashlib

        assert hashlib.sha256(path.read_bytes()).hexdigest() == r["sha256"]
        assert r["audit_seq"] and r["request_id"] and r["c2pa"] == "signed" and r["watermark"] == "embedded"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["images"] == 8 and manifest["requests"] == 4
    assert manifest["parquet"] and (out / "labels.parquet").exists()
    card = (out / "README.md").read_text()
    assert "## How to cite" in card and manifest["spec_digest"] in card and "local/tiny-digits" in card
    assert not list(out.rglob("*.tmp"))
    paid_once(built["home"], rows)


def test_rerun_pays_nothing_and_changes_nothing(
    built: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(built["home"]))
    before = labels(built["out"])
    result = build(built["spec"], built["out"], config=built["root"] / "gateway.yaml", progress=False)
    assert result.requests_run == 0 and result.requests_skipped == 4 and result.cost_usd_run == 0
    assert labels(built["out"]) == before


def test_a_spec_change_that_alters_items_needs_force_new(built: dict[str, Path], tmp_path: Path) -> None:
    changed = write_spec(tmp_path / "changed.yaml", seed=99)
    with pytest.raises(UsageError, match="--force-new"):
        build(changed, built["out"], progress=False)


def test_quality_gates_drop_but_keep_paid_items(built: dict[str, Path], tmp_path: Path) -> None:
    from gateway.datasets.build import _listed
    from gateway.datasets.output import BuildFolder

    folder = BuildFolder(built["out"])
    spec = load_spec(write_spec(tmp_path / "q.yaml", quality={"dedupe_hamming": 64}))
    listed, dropped = _listed(spec, plan(spec), folder.done())
    assert len(listed) == 2 and len(dropped) == 6  # distance 64 = everything is a twin of the first per label
    assert all("near-duplicate" in d["reason"] for d in dropped)


def test_evaluate_reports_tstr_next_to_the_real_baseline(
    built: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["dataset", "evaluate", str(built["out"]), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0
    assert doc["train_images"] == 8 and doc["test_images"] == 1797 - 8
    assert 0 <= doc["tstr_accuracy"] <= 1 and 0 < doc["real_baseline_accuracy"] <= 1
    assert abs(doc["gap_points"] - (doc["real_baseline_accuracy"] - doc["tstr_accuracy"]) * 100) < 0.02


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "dataset", "build", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_resume_after_sigkill_never_pays_a_finished_item_twice(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cfg = write_config(tmp_path, home)
    spec = write_spec(
        tmp_path / "spec.yaml",
        images_per_request=1,
        classes=[{"label": str(d), "prompts": [f"a handwritten {d}"], "count": 3} for d in (1, 4, 7)],
    )
    env = {**os.environ, "GATEWAY_HOME": str(home)}
    out = tmp_path / "out"
    proc = _cli(str(spec), "--out", str(out), "--config", str(cfg), "--workers", "2", env=env)
    done = out / ".build" / "done.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if done.exists() and len(done.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()  # reap it and close its pipes
    before = {
        json.loads(line)["key"]: json.loads(line) for line in done.read_text().splitlines() if line.strip()
    }
    for png in (out / "images").rglob("*.png"):  # every file written is whole: atomic renames only
        from PIL import Image

        Image.open(png).verify()
    time.sleep(3.5)  # the killed requests' claim leases (3 s here) run out
    resumed = _cli(str(spec), "--out", str(out), "--config", str(cfg), "--json", env=env)
    stdout, stderr = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, stderr[-2000:]
    doc = json.loads(stdout)
    assert doc["complete"] and doc["images"] == 9 and doc["requests_skipped"] >= 3
    rows = labels(out)
    for row in rows:
        key = (
            next(k for k, rec in before.items() if rec["request_id"] == row["request_id"])
            if any(rec["request_id"] == row["request_id"] for rec in before.values())
            else None
        )
        if key is not None:  # finished before the kill: the same result, not bought again
            assert before[key]["images"][0]["sha256"] == row["sha256"]
    paid_once(home, [r for r in rows if any(rec["request_id"] == r["request_id"] for rec in before.values())])
    assert len({r["request_id"] for r in rows}) == 9


def test_budget_stop_exits_4_keeps_what_was_paid_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("GATEWAY_HOME", str(home))
    cfg = write_config(tmp_path, home)
    out = tmp_path / "out"
    # A fresh home: no history, so the reservation is the card's figure scaled by the host's load. Pin
    # that figure to 1 for the whole test (the workers inherit it): every estimate of the build is then
    # at least the one read here (the card's figure is the floor), and the budget is that estimate plus
    # 2%. One request fits; a second would need its reservation within what the first left, i.e. the
    # first to settle at under 2% of its estimate, which no host does (idle hosts settle near 1/15).
    # A host so loaded that the first request runs past its reservation is stopped there instead.
    from decimal import Decimal

    from gateway import Gateway
    from gateway.ledger import timebill

    monkeypatch.setenv(timebill.CONTENTION_ENV, "1")
    with Gateway.from_config(cfg) as gw:
        estimate = Decimal(gw.explain("a handwritten 1", n=2, project="sizing").to_dict()["estimate_usd"])
    before = sum(m for _, m in settled(home))
    budget = (estimate * Decimal("1.02")).quantize(Decimal("0.000001"))
    tight = write_spec(tmp_path / "spec.yaml", budget_usd=str(budget))
    code, stdout, err = run(
        ["dataset", "build", str(tight), "--out", str(out), "--config", str(cfg), "--json"], capsys
    )
    assert code == 4, err
    doc = json.loads(stdout)
    assert not doc["complete"] and doc["stopped"] == "BudgetExceeded" and doc["images"] < 8
    manifest = json.loads((out / "manifest.json").read_text())
    # One whole request (2 images) was kept, or, on a host too loaded for the card's figure, the first
    # run was stopped at its reservation (paid, counted) and its retry refused.
    assert doc["images"] == 2 or (doc["images"] == 0 and manifest["stopped_runs"] >= 1), (doc, manifest)
    kept = labels(out)
    paid = sum(m for _, m in settled(home)) - before
    assert paid <= budget * 1_000_000  # micro-dollars: the hard stop held
    assert round(float(manifest["cost_usd"]) * 1e6) == paid
    # Lift the budget (it is not part of the items, so the same build continues).
    roomy = write_spec(tmp_path / "spec.yaml")
    code, _, err = run(
        ["dataset", "build", str(roomy), "--out", str(out), "--config", str(cfg), "--json"], capsys
    )
    assert code == 0, err
    rows = labels(out)
    assert len(rows) == 8 and all(k in rows for k in kept)
    paid_once(home, rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert round(float(manifest["cost_usd"]) * 1e6) == sum(m for _, m in settled(home)) - before


@pytest.mark.slow
def test_local_and_ray_build_the_same_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    import numpy as np
    from PIL import Image

    small = {"classes": [{"label": "2", "prompts": ["a handwritten 2"], "count": 2}]}
    outs = {}
    for name in ("local", "ray"):
        home = tmp_path / f"home-{name}"
        monkeypatch.setenv("GATEWAY_HOME", str(home))
        spec = write_spec(tmp_path / f"{name}.yaml", **small)
        result = build(
            spec, tmp_path / name, executor_name=name, config=write_config(tmp_path, home), progress=False
        )
        assert result.exit_code == 0 and result.executor == name
        outs[name] = labels(tmp_path / name)
    fields = ("id", "label", "split", "seed", "prompt", "path", "model")
    assert [{k: r[k] for k in fields} for r in outs["local"]] == [
        {k: r[k] for k in fields} for r in outs["ray"]
    ]
    for a, b in zip(outs["local"], outs["ray"], strict=True):
        # Pixels agree up to each output's own watermark payload (provenance is unique per output).
        pa = np.asarray(Image.open(tmp_path / "local" / a["path"]).convert("L"), dtype=np.float64)
        pb = np.asarray(Image.open(tmp_path / "ray" / b["path"]).convert("L"), dtype=np.float64)
        psnr = 10 * np.log10(255**2 / max(np.mean((pa - pb) ** 2), 1e-12))
        assert psnr > 30, psnr


# --------------------------------------------------------------------------- a run stopped at its reservation


class StepClock:
    """Monotonic time that advances ``tick`` seconds on every read (one denoising step per read)."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 1000.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def _budgeted_worker(tmp_path: Path, tick: float) -> Any:
    """A dataset worker whose gateway runs tiny-digits under a budget, each step taking ``tick`` s."""
    from gateway import Gateway
    from gateway.backends.local import LocalBackend
    from gateway.config import Settings
    from gateway.datasets.worker import Worker

    home = tmp_path / "home"
    rules = tmp_path / "budget.yaml"
    rules.write_text(
        "version: 1\nrules:\n"
        '  - {id: ds, kind: budget, when: {project: ds}, scope: project, period: total, limit_usd: "1"}\n'
    )
    settings = Settings.load(None, home=home)
    settings = settings.model_copy(update={"policies": (*settings.policy_paths, rules)})
    context = {"team": "ml", "project": "ds", "use_case": "synthetic-data", "user": "t"}
    job = {
        "settings": settings.model_dump(mode="json"),
        "model": "tiny-digits",
        "steps": 10,
        "context": context,
    }
    worker = Worker(job)
    worker.gateway.close()
    worker.gateway = Gateway(settings, backends={"local": LocalBackend(clock=StepClock(tick))})
    return worker


@pytest.mark.parametrize(("tick", "ok"), [(0.3, True), (50.0, False)])
def test_a_run_stopped_at_its_reservation_is_retried_once_and_its_cost_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tick: float, ok: bool
) -> None:
    """The card's figure is 0.1 s per image-step: at 0.15 s (tick 0.3 for two images) the first run is
    stopped and the retry, sized from the stop, finishes; at 25 s both runs stop and the item fails.
    Either way every stopped run's charge comes back, and it is exactly what the ledger settled."""
    monkeypatch.setenv("GATEWAY_HOST_CONTENTION", "1")
    worker = _budgeted_worker(tmp_path, tick)
    try:
        res = worker.run({"key": "dataset:t:7:0", "prompt": "a handwritten 7", "n": 2, "seed": 5})
    finally:
        worker.close()
    assert res["ok"] is ok, res["message"] if not res["ok"] else res
    assert res["stops"] == (1 if ok else 2)
    rows = settled(tmp_path / "home")
    assert len(rows) == res["stops"] + int(ok)
    total = sum(m for _, m in rows)
    paid_ok = round(float(res["cost_usd"]) * 1e6) if ok else 0
    assert round(float(res["stopped_usd"]) * 1e6) == total - paid_ok > 0
    if not ok:
        assert res["error"] == "ProvidersFailed" and "reservation pays for" in res["message"]
