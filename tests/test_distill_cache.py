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


def test_lcm4_ends_come_from_the_same_noise_and_are_cached_beside_trajectories(tmp_path: Path) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    from gateway.models.distill_tiny_digits import _lcm_ends_cached, _solver_text, teacher_dir

    folder = teacher_dir()
    teach = UNet2DModel.from_pretrained(folder / "unet", local_files_only=True, low_cpu_mem_usage=False)
    ddpm = DDPMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    noise = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 4, 7])
    cache, key = tmp_path / "traj.pt", {"seed": 1, "trajectories": 3}
    path, ends = _lcm_ends_cached(teach, ddpm, noise, labels, 2.0, 1, cache, key, 0.0)
    assert ends.shape == noise.shape and float(ends.abs().max()) <= 1.0
    assert path.shape == (3, 4, 1, 16, 16) and torch.equal(path[:, 0], noise)  # x_t at 999, 759, 499, 259
    side = tmp_path / "traj-lcm4.pt"
    assert side.is_file() and not cache.exists()  # the DPM++ cache itself is left alone
    path2, again = _lcm_ends_cached(teach, ddpm, noise, labels, 2.0, 1, cache, key, 0.0)
    # Reused, not recomputed (the re-noising draws would differ otherwise).
    assert torch.equal(again, ends) and torch.equal(path2, path)
    assert _load_cache(side, key) is None  # keyed apart from the DPM++ trajectories
    assert "LCMScheduler" in _solver_text("lcm4", 2.0) and "LCMScheduler" not in _solver_text("dpm", 2.0)


def test_judge_filter_keeps_ends_read_as_their_digit_and_drops_the_rest() -> None:
    from gateway.models.distill_tiny_digits import judge_keeps
    from gateway.models.train_tiny_digits import load_training_data

    x, y = load_training_data()  # real digits, 16x16 in [-1, 1], as trajectory ends are
    assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
    x, y = x[:100], y[:100]
    wrong = (y + 1) % 10
    labels = torch.where(torch.arange(100) % 2 == 0, y, wrong)  # every other label is another digit
    kept = judge_keeps(x, labels)
    assert kept.dtype == torch.bool and kept.shape == (100,)
    assert int(kept[1::2].sum()) == 0  # no end labelled with another digit survives
    assert int(kept[0::2].sum()) >= 45  # the real digits under their own label do (the judge: ~98 %)


def test_training_seeds_never_reuse_benchmark_or_validation_noise() -> None:
    from gateway.models.distill_tiny_digits import check_training_seed, main

    for ok in (0, 1, 2, 3, 999, 2000):
        check_training_seed(ok)
    for bad in (1000, 1500, 1999, VALIDATION_SEED0, VALIDATION_SEED0 + 100):
        with pytest.raises(SystemExit):
            main(["--out", "unused", "--seed", str(bad), "--steps", "1"])
