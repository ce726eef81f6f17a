"""Run every benchmark and rewrite docs/benchmarks.md: one command, on this machine.

    python benchmarks/run_all.py                 # everything (~15-20 min on 2 cores), then the document
    python benchmarks/run_all.py --quick         # smoke sizes (a few minutes); the document says so
    python benchmarks/run_all.py --only overhead,startup   # rerun some; the rest keep their last results
    python benchmarks/run_all.py --render-only   # rebuild the document from benchmarks/results/

Each benchmark runs in its own subprocess, one after another (never two at once: they would measure
each other). This harness's own scripts write JSON; the other areas' scripts are run as their authors
wrote them and their printed tables are kept verbatim. Raw results land in benchmarks/results/ (one
file per benchmark, with the command, date, duration and load average), so the document can be
rebuilt or diffed without rerunning anything.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DOC = REPO / "docs" / "benchmarks.md"
sys.path.insert(0, str(HERE))

from _common import machine, versions  # noqa: E402
from _render import render  # noqa: E402


@dataclass(frozen=True)
class Spec:
    """One benchmark: its script, its arguments (full and quick), and whether it writes JSON."""

    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    json_file: bool = False  # True: ours, takes --json PATH; False: stdout kept as text
    timeout_s: int = 1800

    def argv(self, quick: bool, json_path: Path) -> list[str]:
        args = list(self.quick if quick else self.full)
        if self.json_file:
            args += ["--json", str(json_path)]
        return [sys.executable, f"benchmarks/{self.script}", *args]


SPECS: tuple[Spec, ...] = (
    Spec("startup", "bench_startup.py", (), ("--quick",), json_file=True),
    Spec("overhead", "bench_overhead.py", ("--profile",), ("--quick", "--profile"), json_file=True),
    Spec("concurrency", "bench_concurrency.py", ("--profile",), ("--quick",), json_file=True),
    Spec("remote_provenance", "bench_remote_provenance.py", (), ("--quick",), json_file=True),
    Spec("local_quality", "bench_local_quality.py", (), ("--quick",), json_file=True, timeout_s=3600),
    # Other areas' benchmarks, at reduced sizes (their own docs carry their full-size runs).
    Spec("backends", "remote_backends.py", ("--calls", "200"), ("--calls", "30")),
    Spec("policy", "bench_policy.py", ("-n", "5000"), ("-n", "500")),
    Spec("ledger", "bench_ledger.py", ("--n", "1000", "--seconds", "3"), ("--n", "200", "--seconds", "1")),
    Spec(
        "audit",
        "bench_audit.py",
        ("--records", "20000", "--appends", "200", "--json"),
        ("--records", "2000", "--appends", "50", "--json"),
    ),
    Spec("watermark", "bench_watermark.py", ("--fp-images", "200"), ("--only", "speed")),
    Spec(
        "dashboard",
        "bench_dashboard.py",
        ("--requests", "2000", "--repeat", "3"),
        ("--requests", "300", "--repeat", "1"),
    ),
    Spec("archive", "bench_archive.py", (), ("--quick",)),
)


def git_head() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", "gateway")),
    }


def run_one(spec: Spec, quick: bool) -> dict[str, Any]:
    """Run one benchmark script; return its record (kept in benchmarks/results/NAME.json)."""
    RESULTS.mkdir(exist_ok=True)
    json_path = RESULTS / f"{spec.name}.data.json"
    json_path.unlink(missing_ok=True)
    argv = spec.argv(quick, json_path)
    shown = " ".join(["python", *argv[1:]]).replace(f" --json {json_path}", "")
    record: dict[str, Any] = {
        "name": spec.name,
        "command": shown,
        "quick": quick,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    script = HERE / spec.script
    if not script.exists():
        record.update(status="missing", error=f"{spec.script} is not in benchmarks/ yet")
        return record
    print(f"[run_all] {shown}", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
    env.pop("LITELLM_LOG", None)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=spec.timeout_s, check=False
        )
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = -1, _text(exc.stdout), _text(exc.stderr) + f"\ntimed out after {spec.timeout_s} s"
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    record["returncode"] = rc
    if rc != 0:
        record.update(status="failed", error=(err or out)[-3000:])
    elif spec.json_file:
        record.update(status="ok", data=json.loads(json_path.read_text()))
    else:
        record.update(status="ok", text=out.strip())
        if out.lstrip().startswith("{"):
            with contextlib.suppress(ValueError):
                record["data"] = json.loads(out)
    json_path.unlink(missing_ok=True)
    print(
        f"[run_all] {spec.name}: {record['status']} in {record.get('seconds')} s", file=sys.stderr, flush=True
    )
    return record


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode(errors="replace")


def header() -> dict[str, Any]:
    return {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git_head(),
        "versions": versions(
            "diffusion-gateway",
            "torch",
            "diffusers",
            "boto3",
            "replicate",
            "litellm",
            "pillow",
            "opentelemetry-sdk",
            "c2pa-python",
            "invisible-watermark",
            "psycopg",
            "pydantic",
            "scikit-learn",
        ),
        "sqlite": __import__("sqlite3").sqlite_version,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke sizes for every benchmark")
    ap.add_argument("--only", help="comma-separated names: " + ",".join(s.name for s in SPECS))
    ap.add_argument("--render-only", action="store_true", help="rebuild docs/benchmarks.md from results/")
    ap.add_argument("--out", type=Path, default=DOC, help="where to write the document")
    args = ap.parse_args()
    names = [s.name for s in SPECS]
    wanted = names if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}")
    RESULTS.mkdir(exist_ok=True)
    if not args.render_only:
        (RESULTS / "_header.json").write_text(json.dumps(header(), indent=2))
        for spec in SPECS:
            if spec.name in wanted:
                rec = run_one(spec, args.quick)
                (RESULTS / f"{spec.name}.json").write_text(json.dumps(rec, indent=2, default=str))
    records = {}
    for name in names:
        path = RESULTS / f"{name}.json"
        if path.exists():
            records[name] = json.loads(path.read_text())
    head_path = RESULTS / "_header.json"
    head = json.loads(head_path.read_text()) if head_path.exists() else header()
    args.out.write_text(render(head, records))
    print(
        f"[run_all] wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
