"""What stamping a provider's image costs: watermark + C2PA CPU per megapixel, against the old setting.

    python benchmarks/bench_remote_provenance.py            # 3 photos at 1024x1024, 4 rounds
    python benchmarks/bench_remote_provenance.py --quick    # 1 round

A remote image arrives as PNG bytes; ``Provenance.stamp`` decodes it, checks it for third-party marks,
embeds the v2 watermark (with its read-back), re-encodes lossless PNG and signs a C2PA manifest. Each
configuration runs in a fresh subprocess (BLAS worker threads, once woken, would spill into the next
measurement), alternating "as shipped" and "before" so a drift in machine load hits both alike:

* as shipped: BLAS and OpenCV on one thread while stamping, PNG written by libpng (OpenCV) with the
  Paeth filter and zlib's run-length strategy;
* before: the previous release's settings: numpy's BLAS threaded as loaded, Pillow's PNG writer at
  plain zlib level 1.

CPU is ``time.process_time`` of the whole process across the stamp calls (every thread's CPU,
spinning BLAS workers included), per megapixel of input.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from _common import emit, machine

SIDE = 1024
PHOTOS = ("astronaut", "coffee", "chelsea")
MODES = {  # name -> (watermark, c2pa)
    "watermark + C2PA": (True, True),
    "watermark only": (True, False),
    "C2PA only": (False, True),
}


def _photos() -> list[bytes]:
    import numpy as np
    import skimage.data
    from PIL import Image

    out = []
    for name in PHOTOS:
        img = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
        buf = io.BytesIO()
        img.resize((SIDE, SIDE), Image.Resampling.BICUBIC).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def child(setting: str, repeats: int) -> dict[str, Any]:
    """One fresh process: stamp every photo ``repeats`` times in each mode; CPU and wall per MP."""
    from gateway.provenance import _image, core
    from gateway.provenance._model import ProvenanceInfo

    if setting == "before":
        core.one_compute_thread = contextlib.nullcontext  # type: ignore[assignment]
        _image.PNG_STRATEGY = zlib.Z_DEFAULT_STRATEGY
        _image.PNG_LIBPNG = False
    photos = _photos()
    prov = core.Provenance(Path(tempfile.mkdtemp(prefix="bench-prov-")), {})
    mp = SIDE * SIDE / 1e6
    out: dict[str, Any] = {}
    for mode, (wm, c2) in MODES.items():
        n = 0

        def info(i: int) -> ProvenanceInfo:
            return ProvenanceInfo(
                request_id=f"req-{i}", provider="bedrock", model="m", seed=None, prompt_sha256="0" * 64
            )

        prov.stamp(photos[0], info=info(-1), watermark=wm, c2pa=c2)  # warm: keys, imports
        cpu, wall = [], []
        for _ in range(repeats):
            for data in photos:
                c0, w0 = time.process_time(), time.perf_counter()
                prov.stamp(data, info=info(n), watermark=wm, c2pa=c2)
                cpu.append((time.process_time() - c0) / mp)
                wall.append((time.perf_counter() - w0) / mp)
                n += 1
        out[mode] = {
            "cpu_ms_per_mp": statistics.median(cpu) * 1e3,
            "wall_ms_per_mp": statistics.median(wall) * 1e3,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4, help="alternating subprocess pairs")
    ap.add_argument("--repeats", type=int, default=2, help="stamps of each photo per process and mode")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", choices=("shipped", "before"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return
    rounds = 1 if args.quick else args.rounds
    runs: dict[str, list[dict[str, Any]]] = {"shipped": [], "before": []}
    load0, t0 = os.getloadavg(), time.perf_counter()
    for r in range(rounds):
        for setting in ("shipped", "before") if r % 2 == 0 else ("before", "shipped"):
            cmd = [sys.executable, __file__, "--child", setting, "--repeats", str(args.repeats)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[setting].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{rounds} {setting}: done", file=sys.stderr, flush=True)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for setting, got in runs.items():
        table[setting] = {
            mode: {k: statistics.median(g[mode][k] for g in got) for k in ("cpu_ms_per_mp", "wall_ms_per_mp")}
            for mode in MODES
        }
    both = "watermark + C2PA"
    result = {
        "machine": machine(),
        "image": f"{len(PHOTOS)} photos ({', '.join(PHOTOS)}) resized to {SIDE}x{SIDE}, PNG in",
        "rounds": rounds,
        "repeats": args.repeats,
        "load_avg": {"start": list(load0), "end": list(os.getloadavg())},
        "seconds": round(time.perf_counter() - t0, 1),
        "settings": table,
        "speedup_cpu": table["before"][both]["cpu_ms_per_mp"] / table["shipped"][both]["cpu_ms_per_mp"],
    }
    for setting, modes in table.items():
        for mode, v in modes.items():
            print(
                f"{setting:8s} {mode:18s} CPU {v['cpu_ms_per_mp']:6.0f} ms/MP",
                f"wall {v['wall_ms_per_mp']:6.0f} ms/MP",
            )
    print(f"watermark + C2PA: before / shipped CPU = {result['speedup_cpu']:.2f}x")
    emit(result, args.json)


if __name__ == "__main__":
    main()
