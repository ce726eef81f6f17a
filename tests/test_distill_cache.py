"""The distillation's trajectory cache and the checkpoint selection rule (no teacher run needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from gateway.models.distill_tiny_digits import _load_cache, _save_cache  # noqa: E402
from gateway.models.select_tiny_digits_lcm import VALIDATION_SEED0, rank_key  # noqa: E402


def test_cache_round_trip_and_refuses_other_settings(tmp_path: Path) -> None:
    key = {"seed": 1, "trajectories": 4, "grid": [999, 499]}
    gen = torch.Generator().manual_seed(7)
    x_pts, x_end = torch.randn(4, 8, 1, 16, 16), torch.randn(4, 1, 16, 16)
    path = tmp_path / "traj.pt"
    _save_cache(path, key, x_pts, x_end, gen.get_state())
    assert not path.with_name("traj.pt.tmp").exists()  # written atomically
    got = _load_cache(path, key)
    assert got is not None
    assert torch.equal(got["x_pts"], x_pts) and torch.equal(got["x_end"], x_end)
    resumed = torch.Generator()
    resumed.set_state(got["gen_state"])  # training draws continue as if the teacher had just run
    assert torch.equal(torch.randn(3, generator=resumed), torch.randn(3, generator=gen))
    assert _load_cache(path, {**key, "seed": 2}) is None  # other settings: regenerate, never reuse
    assert _load_cache(tmp_path / "missing.pt", key) is None


def test_selection_rule_and_validation_seeds_apart_from_the_benchmarks() -> None:
    def row(cc2: float, cc1: float, fd2: float) -> dict[str, object]:
        return {"1": {"class_consistency": cc1}, "2": {"class_consistency": cc2, "fd": fd2}}

    a, b, c = row(0.98, 0.96, 160.0), row(0.98, 0.97, 170.0), row(0.97, 0.99, 100.0)
    assert max([a, b, c], key=rank_key) is b  # 2-step consistency first, then 1-step, then FD
    assert max([a, row(0.98, 0.96, 150.0)], key=rank_key)["2"]["fd"] == 150.0
    # The benchmark's seeds are 1000 + 100*digit + batch (< 2000): the validation set never meets them.
    assert VALIDATION_SEED0 > 2000
