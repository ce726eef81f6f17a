"""Edit requests and input decode-safety: mode inference, bad files refused with a reason (exit 2)."""

from __future__ import annotations

import pytest
from edit_support import bomb_png, half_mask, jpeg, png

from gateway.errors import InvalidRequestError
from gateway.inputs import check_inputs, edit_options, mask_to_repaint, repaint_mask_png
from gateway.types import ImageRequest


def test_mode_is_inferred_and_edit_fields_need_images() -> None:
    assert ImageRequest(prompt="x", images=(png(),)).mode == "img2img"
    assert ImageRequest(prompt="x", images=(png(),), mask=half_mask()).mode == "inpaint"
    assert ImageRequest(prompt="x", images=(png(),), mode="variation").mode == "variation"
    for bad in ({"mask": half_mask()}, {"strength": 0.5}, {"mode": "inpaint"}):
        with pytest.raises(InvalidRequestError, match="need input images"):
            ImageRequest.build("x", **bad)
    with pytest.raises(InvalidRequestError, match="needs a mask"):
        ImageRequest.build("x", images=(png(),), mode="outpaint")
    with pytest.raises(InvalidRequestError, match="strength"):
        ImageRequest.build("x", images=(png(),), strength=1.5)
    with pytest.raises(InvalidRequestError, match="images"):
        ImageRequest.build("x", images=("in.png",))  # a path string is never taken for image bytes
    assert "images" not in repr(ImageRequest(prompt="x", images=(png(),)))  # no bytes in reprs/logs


def _check(**fields: object) -> None:
    check_inputs(ImageRequest(prompt="x", **fields))  # type: ignore[arg-type]


def test_good_inputs_pass_and_are_described() -> None:
    got = check_inputs(ImageRequest(prompt="x", images=(png(), jpeg()), mask=half_mask()))
    assert [(i.role, i.mime, i.width) for i in got] == [
        ("image", "image/png", 64), ("image", "image/jpeg", 64), ("mask", "image/png", 64)
    ]  # fmt: skip
    assert len({i.sha256 for i in got}) == 3


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (png()[:-40], "truncated|damaged"),
        (png()[:30], "damaged"),
        (b"GIF89a" + b"\0" * 64, "not a PNG, JPEG or WebP"),
        (b"%PDF-1.7 not an image", "not a PNG, JPEG or WebP"),
        (bomb_png(), "decompression-bomb"),
        (bomb_png(5000, 5000), "pixel limit"),
        (b"", "empty"),
    ],
    ids=["truncated", "cut-header", "gif", "pdf", "bomb", "oversize", "empty"],
)
def test_bad_inputs_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequestError, match=reason) as err:
        _check(images=(data,))
    assert err.value.exit_code == 2
    assert "input image 0" in str(err.value)


def test_byte_and_pixel_caps_are_configurable() -> None:
    req = ImageRequest(prompt="x", images=(png((100, 100)),))
    with pytest.raises(InvalidRequestError, match="byte limit"):
        check_inputs(req, max_bytes=10)
    with pytest.raises(InvalidRequestError, match="pixel limit"):
        check_inputs(req, max_pixels=99 * 99)


def test_mask_of_another_size_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="mask is 32x32 but input image 0 is 64x64"):
        _check(images=(png(),), mask=half_mask((32, 32)))
    with pytest.raises(InvalidRequestError, match="mask does not decode"):
        _check(images=(png(),), mask=half_mask()[:-30])


def test_mask_conventions_white_or_transparent_means_repaint() -> None:
    for mask in (half_mask(), half_mask(alpha=True)):
        m = mask_to_repaint(mask)
        assert m[:, :32].max() == 0.0 and m[:, 32:].min() == 1.0
    from io import BytesIO

    import numpy as np
    from PIL import Image

    black = np.asarray(Image.open(BytesIO(repaint_mask_png(half_mask(), repaint_white=False))).convert("L"))
    assert black[:, 32:].max() == 0 and black[:, :32].min() == 255  # Bedrock inpainting: black = change


def test_edit_options_accept_paths_bytes_and_pil(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    p = tmp_path / "in.png"
    p.write_bytes(png())
    opts = edit_options([p, png(), Image.new("RGB", (8, 8))], str(p), 0.3, None, {"n": 2})
    assert len(opts["images"]) == 3 and opts["mask"] == png() and opts["strength"] == 0.3 and opts["n"] == 2
    with pytest.raises(InvalidRequestError, match="cannot be read"):
        edit_options(tmp_path / "missing.png", None, None, None, {})
