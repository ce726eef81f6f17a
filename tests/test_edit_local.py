"""Local edits: tiny-digits img2img and inpainting on the shipped weights (judged by the classifier
trained on the real digits), the CLI contract of ``gateway edit``, and diffusers AutoPipeline loading on
a tiny random-weight Stable Diffusion pipeline."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edit_support import half_mask, png
from PIL import Image

from gateway.backends.base import BackendCall
from gateway.backends.local import LocalBackend
from gateway.backends.local_edit import start_index
from gateway.cli import main
from gateway.models.quality import real_digit_classifier, to_digit_features
from gateway.types import ImageRequest


@pytest.fixture(scope="module")
def backend() -> Iterator[LocalBackend]:
    b = LocalBackend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def three(backend: LocalBackend) -> bytes:
    """A tiny-digits 3 straight from the backend (no watermark: pixel comparisons stay exact)."""
    call = BackendCall(ImageRequest(prompt="a handwritten 3", seed=1, width=256, height=256), "tiny-digits")
    return backend.generate(call).images[0]


def reads(data: bytes) -> int:
    return int(real_digit_classifier().predict(to_digit_features(data)[None])[0])


def edit(backend: LocalBackend, src: bytes, **fields: Any) -> list[bytes]:
    req = ImageRequest(prompt="a handwritten 8", images=(src,), seed=3, width=256, height=256, **fields)
    return list(backend.generate(BackendCall(req, "tiny-digits")).images)


def test_strength_picks_the_start_step() -> None:
    assert [start_index(10, s) for s in (0.0, 0.15, 0.5, 0.85, 1.0)] == [10, 9, 5, 2, 0]


def test_high_strength_turns_a_3_into_an_8_and_low_strength_keeps_it(backend: LocalBackend,
                                                                      three: bytes) -> None:  # fmt: skip
    assert reads(three) == 3
    high = edit(backend, three, strength=0.85, n=4)
    low = edit(backend, three, strength=0.15, n=4)
    assert sum(reads(d) == 8 for d in high) >= 3
    assert sum(reads(d) == 3 for d in low) >= 3
    same = edit(backend, three, strength=0.0)[0]  # no step runs: the input, resampled
    assert reads(same) == 3


def test_inpainting_leaves_the_unmasked_region_exactly(backend: LocalBackend, three: bytes) -> None:
    out = edit(backend, three, mask=half_mask((256, 256)), n=2)
    src = np.asarray(Image.open(io.BytesIO(three)).convert("L"))
    for data in out:
        got = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
        assert got.shape == src.shape
        assert np.array_equal(got[:, :128], src[:, :128])  # outside the mask: the input's own pixels
        assert not np.array_equal(got[:, 128:], src[:, 128:])


def test_unsupported_local_modes_are_refused(backend: LocalBackend, three: bytes) -> None:
    from gateway.errors import InvalidBackendRequest

    with pytest.raises(InvalidBackendRequest, match="img2img or inpaint"):
        edit(backend, three, mode="variation")


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = int(main(args) or 0)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_edit_json_lists_inputs(tmp_path: Path, three: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(three)
    mask = tmp_path / "mask.png"
    mask.write_bytes(half_mask((256, 256)))
    code, out, err = run(["edit", str(src), "a handwritten 8", "--strength", "0.85", "--seed", "2",
                          "--mask", str(mask), "--out", str(tmp_path / "out"), "--json"], capsys)  # fmt: skip
    assert code == 0, err
    obj = json.loads(out)
    assert out.count("\n") == 1
    assert obj["inputs"] == [{"path": str(src), "sha256": obj["decision"]["inputs"][0]["sha256"],
                              "c2pa": "absent", "ai_generated": False, "watermark": "absent"}]  # fmt: skip
    assert obj["mask"]["path"] == str(mask) and obj["edit_mode"] == "inpaint"
    assert obj["provider"] == "local" and Path(obj["images"][0]["path"]).is_file()
    assert obj["c2pa"] == "signed" and obj["watermark"] == "embedded"


def test_cli_edit_idempotency_key_pays_once(
    tmp_path: Path, three: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(three)
    results = []
    for i in (1, 2):
        args = ["edit", str(src), "a handwritten 8", "--strength", "0.5", "--seed", "4"]
        args += ["--idempotency-key", "edit-1", "--out", str(tmp_path / f"o{i}"), "--json"]
        code, out, err = run(args, capsys)
        assert code == 0, err
        results.append(json.loads(out))
    first, again = results
    assert not first["replayed"] and again["replayed"] and again["request_id"] == first["request_id"]
    assert [i["sha256"] for i in again["images"]] == [i["sha256"] for i in first["images"]]


def test_cli_unsigned_input_denied_under_require_c2pa(tmp_path: Path, capsys: Any) -> None:
    pol = tmp_path / "inputs.yaml"
    pol.write_text("version: 1\nrules:\n  - {id: inputs.signed, kind: input_image, require: c2pa}\n")
    src = tmp_path / "in.png"
    src.write_bytes(png((256, 256)))
    code, out, err = run(["edit", str(src), "a handwritten 8", "--policy", str(pol), "--json"], capsys)
    assert code == 3 and out == ""
    assert "rule ids: inputs.signed" in err


def test_cli_bad_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(png((256, 256))[:-50])
    code, _, err = run(["edit", str(bad), "a handwritten 8"], capsys)
    assert code == 2 and "input image 0 does not decode" in err
    good = tmp_path / "good.png"
    good.write_bytes(png((256, 256)))
    small = tmp_path / "mask.png"
    small.write_bytes(half_mask((64, 64)))
    code, _, err = run(["edit", str(good), "a handwritten 8", "--mask", str(small)], capsys)
    assert code == 2 and "mask is 64x64" in err
    code, _, _ = run(["edit", str(tmp_path / "missing.png"), "a handwritten 8"], capsys)
    assert code == 2


def test_user_pipeline_edits_through_autopipelines(tmp_path: Path) -> None:
    from tiny_sd import build_tiny_sd

    path = build_tiny_sd(tmp_path)
    b = LocalBackend()
    try:
        opts = {"path": str(path)}
        src = png((32, 32))
        r = b.generate(BackendCall(ImageRequest(prompt="a cat", images=(src,), strength=0.5, steps=2, seed=1),
                                   "tiny-sd", opts))  # fmt: skip
        assert r.metadata["pipeline"] == "StableDiffusionImg2ImgPipeline"
        req = ImageRequest(prompt="a cat", images=(src,), mask=half_mask((32, 32)), steps=2, seed=1, n=2)
        r = b.generate(BackendCall(req, "tiny-sd", opts))
        assert r.metadata["pipeline"] == "StableDiffusionInpaintPipeline" and len(r.images) == 2
        assert Image.open(io.BytesIO(r.images[0])).size == (32, 32)
    finally:
        b.close()
