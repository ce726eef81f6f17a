"""Edits on tiny-digits, judged by the classifier trained on the real digits (gateway/models/quality.py).

    python benchmarks/bench_edit.py            # 12 seeds
    python benchmarks/bench_edit.py --seeds 4  # smoke

For each seed: the gateway draws "a handwritten 3" (dpm++ 10 steps, guidance 2.0, 256x256, watermarked
and C2PA-signed like any output), then edits that output through ``Gateway.edit`` (the code path of
``gateway edit``):

* ``--strength 0.85`` towards "a handwritten 8": share of outputs the real-digit classifier reads as 8;
* ``--strength 0.15`` towards "a handwritten 8": share still read as 3;
* inpainting with a mask over the right half (white = repaint), "a handwritten 8", default strength:
  the unmasked left half is compared with the input pixel by pixel (max and mean absolute difference
  in grey levels, PSNR): what changes there is only our watermark, embedded into the new output.

Also reports the cost and latency per edit from the results. Writes benchmarks/results/edit.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _grey(data: bytes) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=12)
    args = ap.parse_args()
    import numpy as np
    from PIL import Image

    from gateway import Gateway
    from gateway.config import Settings
    from gateway.models.quality import real_digit_classifier, to_digit_features

    clf = real_digit_classifier()

    def read(data: bytes) -> int:
        return int(clf.predict(to_digit_features(data)[None])[0])

    mask_img = np.zeros((256, 256), dtype=np.uint8)
    mask_img[:, 128:] = 255
    buf = io.BytesIO()
    Image.fromarray(mask_img).save(buf, format="PNG")
    mask = buf.getvalue()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as home, Gateway(Settings.load(None, home=Path(home))) as gw:
        for seed in range(args.seeds):
            src = gw.generate("a handwritten 3", seed=seed).image.data
            row: dict[str, Any] = {"seed": seed, "input_reads": read(src)}
            for strength in (0.85, 0.15):
                t = time.perf_counter()
                r = gw.edit(src, "a handwritten 8", strength=strength, seed=seed)
                row[f"s{strength}"] = {
                    "reads": read(r.image.data),
                    "cost_usd": str(r.cost_usd),
                    "latency_s": round(time.perf_counter() - t, 3),
                }
            r = gw.edit(src, "a handwritten 8", mask=mask, seed=seed)
            a, b = _grey(src)[:, :128], _grey(r.image.data)[:, :128]
            diff = np.abs(a - b)
            mse = float((diff**2).mean())
            row["inpaint"] = {
                "keep_max_abs": float(diff.max()),
                "keep_mean_abs": round(float(diff.mean()), 4),
                "keep_psnr_db": round(10 * np.log10(255**2 / mse), 2) if mse else None,
                "watermark": r.image.watermark,
                "c2pa": r.image.c2pa,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    valid = [r for r in rows if r["input_reads"] == 3]
    n = len(valid)
    summary = {
        "seeds": len(rows),
        "inputs_read_as_3": n,
        "strength_0.85_turned_to_8": sum(r["s0.85"]["reads"] == 8 for r in valid) / n if n else None,
        "strength_0.15_kept_3": sum(r["s0.15"]["reads"] == 3 for r in valid) / n if n else None,
        "inpaint_keep_max_abs_max": max(r["inpaint"]["keep_max_abs"] for r in rows),
        "inpaint_keep_psnr_db_median": statistics.median(r["inpaint"]["keep_psnr_db"] or 99.0 for r in rows),
        "edit_latency_s_median": statistics.median(r["s0.85"]["latency_s"] for r in rows),
        "edit_cost_usd_median": str(statistics.median(float(r["s0.85"]["cost_usd"]) for r in rows)),
    }
    out = {"summary": summary, "rows": rows}
    path = REPO / "benchmarks" / "results" / "edit.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
