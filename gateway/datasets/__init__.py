"""Synthetic datasets at scale: a resumable builder that never pays twice, with a card and provenance.

``build(spec, out, executor="local"|"ray", workers=N)`` turns a YAML spec (:mod:`.spec`) into
``images/<split>/<label>/<id>.png``, ``labels.jsonl`` (+ Parquet), ``manifest.json`` and a dataset card,
through the same governed ``Gateway.generate`` every other caller uses (:mod:`.worker`), on a local
process pool or a Ray cluster (:mod:`.executors`). ``evaluate`` scores a tiny-digits build by
train-on-synthetic, test-on-real. Nothing here imports torch, Ray or sklearn until it runs.
"""

from __future__ import annotations

from .build import BuildResult, build
from .spec import DatasetSpec, load_spec, spec_schema

__all__ = ["BuildResult", "DatasetSpec", "build", "load_spec", "spec_schema"]
