"""The watermark transform, payload and detector: real images, real codecs, exact arithmetic."""

from __future__ import annotations

import io
from math import comb

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from provenance_support import digit_image, encode, photo

from gateway.provenance import watermark as W
from gateway.provenance._image import decode, luma_of

KEY = W.WatermarkKey(bytes(range(32)))
OTHER = W.WatermarkKey(bytes(range(1, 33)))


def _mark(img: Image.Image, request_id: str = "req-1", key: W.WatermarkKey = KEY) -> Image.Image:
    d = decode(encode(img))
    out = W.embed_pixels(d.pixels, d.mode, key.payload(request_id))
    assert out.bit_errors == 0
    return Image.fromarray(out.pixels)


def _detect(
    img: Image.Image, keys: list[W.WatermarkKey] | None = None, thorough: bool = False
) -> W.Detection:
    d = decode(encode(img))
    return W.detect(luma_of(d.pixels, d.mode), keys or [KEY], thorough=thorough)


def _reencode(img: Image.Image, fmt: str, **kw: int) -> Image.Image:
    out = Image.open(io.BytesIO(encode(img, fmt, **kw)))
    out.load()
    return out


# ----------------------------------------------------------------------------- threshold arithmetic


def test_thresholds_are_the_largest_that_keep_fp_under_1e6() -> None:
    for candidates, limit in (
        (W.CANDIDATES_DEFAULT, W.MAX_TAG_ERRORS_DEFAULT),
        (W.CANDIDATES_THOROUGH, W.MAX_TAG_ERRORS_THOROUGH),
    ):
        assert (
            W.false_positive_bound(candidates, limit) <= 1e-6 < W.false_positive_bound(candidates, limit + 1)
        )
    # The numbers the docs quote.
    assert (W.CANDIDATES_DEFAULT, W.MAX_TAG_ERRORS_DEFAULT) == (16 * 16 * 137, 11)
    assert (W.CANDIDATES_THOROUGH, W.MAX_TAG_ERRORS_THOROUGH) == (16 * 16 * 8201, 9)
    tail = sum(comb(80, k) for k in range(12)) / 2**80
    assert W.false_positive_bound(35072, 11) == pytest.approx(35072 * tail)
    assert 3.5e-7 < 35072 * tail < 3.7e-7


def test_max_tag_errors_refuses_impossible_targets() -> None:
    with pytest.raises(ValueError, match="cannot reach"):
        W.max_tag_errors(2**80)


# ----------------------------------------------------------------------------- transform identities


def test_dct_is_orthogonal_so_s0_and_the_embedded_change_match_dwt_dct_svd() -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 255, (64, 128))
    b = W._blocks(y)
    for i, j in ((0, 0), (3, 7), (7, 15)):
        block = b[i, j]
        s_dct = np.linalg.svd(cv2.dct(block), compute_uv=False)
        assert s_dct[0] == pytest.approx(W.block_s0(y)[i, j], rel=1e-9)
    # invisible-watermark's diffuse_dct_svd moves s0 of DCT(B) and inverts; we move s0 of B. Same block.
    bits = KEY.payload("x").bits
    delta = W.embed_delta(y, bits)
    marked = W._blocks(y + delta)
    for i, j in ((0, 0), (5, 9)):
        u, s, vt = np.linalg.svd(cv2.dct(b[i, j]))
        s[0] = W.block_s0(y + delta)[i, j]
        via_dct = cv2.idct(u @ np.diag(s) @ vt)
        assert np.allclose(via_dct, marked[i, j], atol=1e-6)


def test_haar_ll_matches_pywavelets() -> None:
    pywt = pytest.importorskip("pywt")
    y = np.random.default_rng(1).uniform(0, 255, (64, 64))
    ll = pywt.dwt2(y, "haar")[0]
    ours = W._blocks(y).swapaxes(1, 2).reshape(32, 32)
    assert np.allclose(ours, ll)


def test_payload_round_trips_through_bits() -> None:
    p = KEY.payload("req-42", 3)
    assert p.bits.shape == (128,)
    assert W.Payload.from_bits(p.bits) == p
    assert p.nonce == KEY.nonce("req-42", 3) != KEY.nonce("req-42", 4)
    assert p.tag == KEY.tag(p.nonce) != OTHER.tag(p.nonce)


def test_key_repr_hides_the_secret() -> None:
    assert bytes(range(32)).hex() not in repr(KEY)
    assert repr(KEY) == f"WatermarkKey(key_id={KEY.key_id_hex})"
    with pytest.raises(ValueError, match="16 bytes"):
        W.WatermarkKey(b"short")


# ----------------------------------------------------------------------------- embed / detect


@pytest.mark.parametrize("make", [digit_image, photo], ids=["grey-digit", "rgb-photo"])
def test_marked_image_is_found_with_its_request_bound_nonce(make) -> None:  # type: ignore[no-untyped-def]
    marked = _mark(make(), "req-7")
    d = _detect(marked)
    assert d.found
    assert d.tag_errors == 0
    assert d.hypothesis == "aligned"
    assert (d.key_id, d.nonce) == (KEY.key_id, KEY.nonce("req-7"))
    assert d.payload_hex == f"{KEY.key_id:04x}{KEY.nonce('req-7'):08x}"


def test_psnr_stays_around_40_db() -> None:
    for img in (digit_image(), photo()):
        d = decode(encode(img))
        assert W.embed_pixels(d.pixels, d.mode, KEY.payload("p")).psnr_db > 40.0


@pytest.mark.parametrize("quality", [95, 75, 50])
def test_jpeg_does_not_erase_the_mark(quality: int) -> None:
    for img in (digit_image(5), photo(1)):
        assert _detect(_reencode(_mark(img), "JPEG", quality=quality)).found


def test_webp_resize_brightness_and_aligned_crops_survive() -> None:
    marked = _mark(photo())
    assert _detect(_reencode(marked, "WEBP", quality=80)).found
    w, h = marked.size
    restored = marked.resize((w * 3 // 4, h * 3 // 4), Image.Resampling.BICUBIC).resize((w, h))
    assert _detect(restored).found
    bright = _detect(ImageEnhance.Brightness(marked).enhance(1.1))
    assert bright.found
    assert bright.hypothesis == "gain=1.1"
    crop = _detect(marked.crop((16, 24, w - 8, h)))
    assert crop.found
    assert crop.hypothesis is not None
    assert crop.hypothesis.startswith("tile-shift")


def test_unaligned_crop_needs_the_thorough_search() -> None:
    cropped = _mark(photo()).crop((13, 21, 256, 256))
    default = _detect(cropped)
    assert not default.found
    assert default.hypotheses_tried == W.DEFAULT_HYPOTHESES
    thorough = _detect(cropped, thorough=True)
    assert thorough.found
    assert thorough.max_tag_errors == W.MAX_TAG_ERRORS_THOROUGH
    assert thorough.hypothesis is not None
    assert thorough.hypothesis == "offset=(3,3) tile-shift=(3,2)"


def test_saturated_images_still_carry_the_mark() -> None:
    for value in (0, 255):
        marked = _mark(Image.new("L", (256, 256), value))
        assert _detect(_reencode(marked, "JPEG", quality=75)).found


@pytest.mark.parametrize(
    "img",
    [
        photo(0),
        photo(1, size=300),
        Image.new("L", (256, 256), 128),
        Image.fromarray(np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8)),
    ],
    ids=["photo", "photo-300", "flat", "noise"],
)
def test_unmarked_images_are_not_found(img: Image.Image) -> None:
    d = _detect(img, [KEY, OTHER])
    assert not d.found
    assert d.tag_errors is not None
    assert d.tag_errors > W.MAX_TAG_ERRORS_DEFAULT
    assert d.key_id is None
    assert d.hypothesis is None


def test_a_mark_made_with_another_key_is_not_ours() -> None:
    marked = _mark(photo(), key=OTHER)
    assert not _detect(marked, [KEY]).found
    assert _detect(marked, [KEY, OTHER]).found


def test_a_forged_nonce_with_a_copied_tag_fails() -> None:
    """Without the key an attacker can copy a tag but not re-bind it to another nonce (request)."""
    real = KEY.payload("req-1")
    forged = W.Payload(real.key_id, real.nonce ^ 0xFFFF, real.tag)
    d = decode(encode(photo()))
    out = W.embed_pixels(d.pixels, d.mode, forged)
    assert not W.detect(luma_of(out.pixels, d.mode), [KEY]).found


def test_sizes_and_key_limits() -> None:
    assert W.can_embed(256, 256)
    assert not W.can_embed(255, 512)
    assert W.can_detect(128, 64)
    assert not W.can_detect(127, 64)
    with pytest.raises(ValueError, match="at most 16"):
        W.detect(np.zeros((64, 128)), [KEY] * 17)
