"""Watermark v2: re-synchronising detection, exact threshold arithmetic, durable credentials."""

from __future__ import annotations

import io
import json
from math import comb
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from provenance_support import digit_image, encode, jpeg_copy, photo

from gateway.provenance import Provenance, ProvenanceInfo
from gateway.provenance import watermark as W1
from gateway.provenance import watermark_v2 as V
from gateway.provenance._image import decode, luma_of
from gateway.provenance.watermark_v2_detect import detect

KEY = W1.WatermarkKey(bytes(range(32)))
OTHER = W1.WatermarkKey(bytes(range(1, 33)))
NONCE = 0x0123456789ABCDEF


def _mark(img: Image.Image, key: W1.WatermarkKey = KEY) -> Image.Image:
    d = decode(encode(img))
    out = V.embed_pixels(d.pixels, d.mode, key, NONCE)
    assert out.readback_tag_errors is not None
    assert out.psnr_db >= 42.0
    return Image.fromarray(out.pixels)


def _found(img: Image.Image, keys: list[W1.WatermarkKey] | None = None) -> bool:
    d = decode(encode(img.convert("RGB") if img.mode not in ("L", "RGB") else img))
    res = detect(luma_of(d.pixels, d.mode), keys or [KEY])
    return res.found and res.nonce == NONCE


@pytest.fixture(scope="module")
def marked_digit() -> Image.Image:
    return _mark(digit_image(3, 256))


# ----------------------------------------------------------------------------- threshold arithmetic


def test_threshold_is_the_largest_that_keeps_fp_under_1e6() -> None:
    assert V.CANDIDATES == 16 * (V.LATTICES * V.DECODES) * (1 + 13 + 78 + 286) == 16 * 16 * 378
    bound = V.false_positive_bound(V.CANDIDATES, V.MAX_TAG_ERRORS)
    assert bound <= 1e-6 < V.false_positive_bound(V.CANDIDATES, V.MAX_TAG_ERRORS + 1)
    exact = V.CANDIDATES * sum(comb(64, k) for k in range(V.MAX_TAG_ERRORS + 1)) / 2**64
    assert bound == pytest.approx(exact, rel=1e-12)
    assert V.MAX_TAG_ERRORS == 6
    # verify tries v2 then v1: the union of both searches stays under 1e-6 (default and --thorough)
    for cands, limit in (
        (W1.CANDIDATES_DEFAULT, W1.MAX_TAG_ERRORS_DEFAULT),
        (W1.CANDIDATES_THOROUGH, W1.MAX_TAG_ERRORS_THOROUGH),
    ):
        assert bound + W1.false_positive_bound(cands, limit) <= 1e-6


def test_payload_is_128_bits_and_keyed() -> None:
    bits = V.payload_bits(KEY, NONCE)
    assert bits.shape == (V.PAYLOAD_BITS,) == (128,)
    assert V.tag(KEY, NONCE) != V.tag(OTHER, NONCE)
    assert V.nonce(KEY, "req", 0) != V.nonce(KEY, "req", 1) != V.nonce(OTHER, "req", 1)
    sb = V.soft_binding(KEY, NONCE)
    assert len(sb) == 18 and sb[:2] == KEY.key_id.to_bytes(2, "big")
    lay = V.layout(KEY)
    assert int((lay.sync != 0).sum()) == V.SYNC_CELLS and int((lay.bit_of >= 0).sum()) == 256 - V.SYNC_CELLS


# ----------------------------------------------------------------------------- round trip and keys


def test_render_matches_the_opencv_cubic_remap_the_shipped_marks_were_drawn_with() -> None:
    """The separable renderer must draw what cv2.remap(INTER_CUBIC) drew: marks already out there
    (and the detector's sync template) depend on it."""
    import cv2

    cells = np.random.default_rng(5).standard_normal((V.TILE, V.TILE))
    for h, w, cell in ((48, 48, 3.0), (256, 301, 256 / 96), (700, 512, 512 / 128)):
        pad = 3
        tile = np.pad(cells.astype(np.float32), pad, mode="wrap")
        ys = ((np.arange(h) + 0.5) / cell - 0.5) % V.TILE + pad
        xs = ((np.arange(w) + 0.5) / cell - 0.5) % V.TILE + pad
        mx = np.broadcast_to(xs[None, :], (h, w)).astype(np.float32)
        my = np.broadcast_to(ys[:, None], (h, w)).astype(np.float32)
        ref = cv2.remap(tile, mx, my, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        assert np.abs(V.render(cells, h, w, cell) - ref).max() < 1e-4


def test_fast_wide_blur_matches_a_gaussian_blur() -> None:
    import cv2

    from gateway.provenance._wm2_sync import smooth_blur

    a = np.random.default_rng(6).random((301, 257)).astype(np.float32) ** 2
    for sigma in (4.0, 8.0, 21.0):
        ref = cv2.GaussianBlur(a, (0, 0), sigma)
        got = smooth_blur(a, sigma)
        inner = (slice(40, -40), slice(40, -40))  # borders are handled differently; the fold masks them
        assert np.abs(got - ref)[inner].max() < 0.05 * float(ref[inner].mean())


def test_mask_spends_strength_in_texture_and_eases_off_at_black() -> None:
    """SSIM pays most for a mark in flat areas and for one clipped at black: the mask follows that."""
    rng = np.random.default_rng(3)
    y = np.full((256, 384), 128.0, dtype=np.float32)
    y[:, 128:256] += rng.normal(0.0, 25.0, (256, 128)).astype(np.float32)  # texture in the middle
    y[:, 256:] = 0.0  # black on the right
    m = V.perceptual_mask(y, 2.7)
    flat, texture, black = m[64:192, 16:96], m[64:192, 160:224], m[64:192, 300:370]
    assert float(texture.mean()) > 2.0 * float(flat.mean())
    assert float(black.max()) <= V.MASK_EASE_FLOOR * V.MASK_RANGE
    assert float(m.max()) <= V.MASK_RANGE + 1e-3


def test_round_trip_on_a_photo_and_key_mismatch() -> None:
    img = Image.fromarray(np.asarray(photo(0, size=400, top=0, left=100)))
    marked = _mark(img)
    assert _found(marked)
    assert not _found(marked, [OTHER])
    assert not _found(img)  # the unmarked original


def test_clean_images_are_not_detected() -> None:
    rng = np.random.default_rng(5)
    clean = [
        digit_image(5, 256),
        photo(1, size=300),
        Image.fromarray(rng.integers(0, 256, (256, 320), dtype=np.uint8)),
        Image.fromarray(np.tile(np.linspace(0, 255, 384, dtype=np.uint8), (256, 1))),
    ]
    for img in clean:
        assert not _found(img)


# ----------------------------------------------------------------------------- attacks (small scale)


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), id="hflip"),
        pytest.param(lambda im: im.rotate(90, expand=True), id="rot90"),
        pytest.param(lambda im: im.rotate(30, resample=Image.Resampling.BICUBIC), id="rot30"),
        pytest.param(lambda im: im.resize((150, 150), Image.Resampling.BICUBIC), id="resize0.59"),
        pytest.param(lambda im: im.resize((300, 256), Image.Resampling.BICUBIC), id="aspect1.17"),
        pytest.param(lambda im: im.crop((70, 40, 198, 168)), id="crop25%"),
        pytest.param(lambda im: Image.open(io.BytesIO(jpeg_copy(encode(im), 50))), id="jpeg50"),
    ],
)
def test_mark_survives_geometry_and_codecs(marked_digit: Image.Image, attack: object) -> None:
    assert callable(attack)
    assert _found(attack(marked_digit))


# ----------------------------------------------------------------------------- verify: v2, v1, durable


def _stamp(home: Path, img: Image.Image, settings: dict[str, object] | None = None) -> bytes:
    pv = Provenance(home, settings)
    info = ProvenanceInfo("req-v2", "local", "tiny-digits", 1, "ab" * 32)
    return pv.stamp(encode(img), info=info, watermark=True, c2pa=True).data


def test_v1_marks_are_still_found(tmp_path: Path) -> None:
    data = _stamp(tmp_path, digit_image(), {"watermark": {"version": 1}})
    rep = Provenance(tmp_path).verify(jpeg_copy(data, 75), request_id="req-v2")
    assert rep.watermark.found and rep.watermark.version == 1 and rep.watermark.request_bound
    assert rep.credential is not None and rep.credential["algorithm"].endswith(".v1")


def test_stripped_copy_finds_its_credential(tmp_path: Path) -> None:
    data = _stamp(tmp_path, digit_image())
    pv = Provenance(tmp_path)
    whole = pv.verify(data, request_id="req-v2")
    assert whole.ok and whole.watermark.version == 2 and whole.soft_binding_match is True
    assert whole.own_manifest_missing is False
    man = whole.c2pa.active
    assert (
        man is not None
        and man.soft_binding is not None
        and man.soft_binding.startswith(f"{whole.watermark.key_id}{whole.watermark.nonce}")
    )
    stripped = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    rep = pv.verify(encode(stripped, "JPEG", quality=80), request_id="req-v2")
    assert rep.ok and rep.watermark.found and rep.watermark.version == 2 and rep.watermark.request_bound
    assert rep.c2pa.state == "absent" and rep.own_manifest_missing is True
    cred = rep.credential
    assert cred is not None and cred["request_id"] == "req-v2" and cred["model"] == "tiny-digits"
    assert cred["manifest"]["assertions"][1]["data"]["alg"] == V.ALGORITHM
    assert cred["manifest_store_bytes"] > 0
    assert "MISSING" in rep.summary()
    json.dumps(rep.to_dict())  # the CLI prints it


def test_gateway_verify_ties_a_stripped_copy_to_its_audit_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway import Gateway
    from gateway.cli import main
    from gateway.config import Settings

    home = tmp_path / "home"
    with Gateway(Settings(home=home)) as gw:
        res = gw.generate("a handwritten 4", n=1, seed=3)
    img = res.images[0]
    assert (
        img.watermark == "embedded" and img.metadata["provenance"]["watermark"]["method"] == "tiled sync v2"
    )
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(jpeg_copy(img.data, 85))
    capsys.readouterr()
    try:
        main(["verify", str(copy), "--json", "--home", str(home)])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)["images"][0]
    assert doc["own_manifest_missing"] is True and doc["c2pa"]["state"] == "absent"
    assert doc["credential"]["request_id"] == res.request_id
    assert doc["audit"]["seq"] == res.audit_seq and doc["audit"]["model"] == "tiny-digits"
    assert doc["audit"]["ts"]
