"""Start-up time and peak memory, each measured in a fresh subprocess.

    python benchmarks/bench_startup.py             # best of 7 for the timings
    python benchmarks/bench_startup.py --quick     # best of 3

* ``import gateway``: time of the import statement inside a fresh interpreter, and which heavy
  modules (torch, diffusers, boto3, ...) it pulled in (the goal is none).
* ``gateway --help``: wall time of the installed console script, process start to exit, against
  ``python -c pass`` on the same interpreter (the floor no CLI can beat).
* Peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``): after ``import gateway``; after a
  ``Gateway`` is built (policy, catalog, SQLite stores, telemetry); and after one tiny-digits image
  through the default gateway (torch + diffusers + the model loaded, watermark + C2PA stamped), with
  the time that first image took in a cold process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from _common import REPO, emit, machine, versions

# The first nine must never load at ``import gateway`` (DESIGN.md); the rest are listed for information.
HEAVY = ("torch", "diffusers", "boto3", "botocore", "replicate", "c2pa", "cv2", "onnxruntime", "psycopg",
         "numpy", "PIL", "opentelemetry.sdk", "sklearn", "httpx")  # fmt: skip

_IMPORT = """
import sys, time, resource
t = time.perf_counter()
import gateway
dt = time.perf_counter() - t
heavy = [m for m in {heavy!r} if m in sys.modules]
print({{"import_s": dt, "heavy": heavy, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}})
"""

_GATEWAY = """
import sys, time, resource, json
from pathlib import Path
import gateway
from gateway import Gateway
from gateway.config import Settings
t = time.perf_counter()
gw = Gateway(Settings(home=Path({home!r})))
built = time.perf_counter() - t
rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
torch_built = "torch" in sys.modules
t = time.perf_counter()
res = gw.generate("a handwritten seven", seed=3)
first = time.perf_counter() - t
rss_local = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
gw.generate("a handwritten seven", seed=4)
second = time.perf_counter() - t
gw.close()
print(json.dumps({{"build_s": built, "maxrss_built_kb": rss_built, "torch_after_build": torch_built,
                  "first_image_s": first, "second_image_s": second, "maxrss_local_kb": rss_local,
                  "provider": res.provider, "model": res.model}}))
"""


def run_py(code: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=REPO)  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def best_wall(cmd: list[str], n: int) -> dict[str, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, cwd=REPO)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"best_s": times[0], "median_s": times[len(times) // 2]}


def gateway_script() -> list[str]:
    exe = shutil.which("gateway", path=str(os.path.dirname(sys.executable)))
    return [exe] if exe else [sys.executable, "-m", "gateway.cli"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=7, help="runs per timing (the best is reported)")
    ap.add_argument("--quick", action="store_true", help="best of 3")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    n = 3 if args.quick else args.n
    import ast

    imports = [ast.literal_eval(run_py(_IMPORT.format(heavy=HEAVY))) for _ in range(n)]
    result: dict[str, Any] = {
        "bench": "startup",
        "machine": machine(),
        "versions": versions("diffusion-gateway", "torch", "diffusers", "click", "pydantic"),
        "runs": n,
        "import_gateway_best_s": min(r["import_s"] for r in imports),
        "import_gateway_median_s": sorted(r["import_s"] for r in imports)[n // 2],
        "import_heavy_modules": imports[0]["heavy"],
        "maxrss_import_mb": imports[0]["maxrss_kb"] / 1024,
        "python_floor": best_wall([sys.executable, "-c", "pass"], n),
        "import_process": best_wall([sys.executable, "-c", "import gateway"], n),
        "help": best_wall([*gateway_script(), "--help"], n),
        "generate_help": best_wall([*gateway_script(), "generate", "--help"], n),
    }
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
        g = json.loads(run_py(_GATEWAY.format(home=f"{tmp}/home"), env=env))
    result["gateway"] = {**g, "maxrss_built_mb": g["maxrss_built_kb"] / 1024,
                         "maxrss_local_mb": g["maxrss_local_kb"] / 1024}  # fmt: skip
    forbidden = set(HEAVY[:9]) & set(result["import_heavy_modules"])
    result["goals"] = {"no_heavy_import_at_import_gateway": not forbidden}
    emit(result, args.json)


if __name__ == "__main__":
    main()
