"""Stamp and verify end to end: real watermark, real c2pa signing and validation, real key files."""

from __future__ import annotations

import io
import json
import logging
import stat
import threading
from pathlib import Path

import pytest
from PIL import Image
from provenance_support import digit_image, encode, flip_byte, jpeg_copy, photo, png_chunk_offset

from gateway.errors import BadResponse, ConfigError
from gateway.provenance import Provenance, ProvenanceInfo, VerifyPolicy, verify_image
from gateway.provenance import c2pa_sign as C
from gateway.provenance import watermark_v2 as W2
from gateway.provenance.keys import SigningMaterial, init_keys, make_dev_chain

INFO = ProvenanceInfo(
    request_id="req-1", provider="local", model="tiny-digits", seed=7, prompt_sha256="ab" * 32
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def pv(home: Path) -> Provenance:
    return Provenance(home)


@pytest.fixture
def stamped_digit(pv: Provenance) -> bytes:
    return pv.stamp(encode(digit_image()), info=INFO, watermark=True, c2pa=True).data


def provider_signed(img: Image.Image) -> bytes:
    """An output as a C2PA-signing provider (think Nova Canvas) would return it: its own chain."""
    _root, leaf, key = make_dev_chain("provider-nova")
    manifest = {
        "claim_generator_info": [{"name": "provider-nova", "version": "1"}],
        "title": "provider.png",
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {
                    "actions": [{"action": "c2pa.created", "digitalSourceType": C.TRAINED_ALGORITHMIC_MEDIA}]
                },
            }
        ],
    }
    return C.sign(encode(img), "image/png", manifest, SigningMaterial(leaf, "es256", private_key_pem=key))


# ----------------------------------------------------------------------------- the "done when" list


def test_a_stamped_image_verifies(pv: Provenance, home: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.provenance"):
        st = pv.stamp(encode(digit_image()), info=INFO, watermark=True, c2pa=True)
    assert "DEVELOPMENT C2PA chain" in caplog.text
    assert (st.watermark, st.c2pa, st.mime, st.width, st.height) == (
        "embedded",
        "signed",
        "image/png",
        256,
        256,
    )
    key = pv.watermark_key(create=False)
    assert key is not None
    assert st.details["watermark"]["key_id"] == key.key_id_hex
    assert st.details["watermark"]["nonce"] == f"{W2.nonce(key, 'req-1'):016x}"  # v2 is the default
    assert st.details["watermark"]["psnr_db"] > 40
    assert st.details["c2pa"]["signer_development"] is True

    r = pv.verify(st.data, request_id="req-1")
    assert r.ok, r.reasons
    assert r.watermark.found
    assert r.watermark.hmac_valid
    assert r.watermark.request_bound
    assert r.watermark.request_index == 0
    assert r.watermark.key_id == key.key_id_hex
    assert r.watermark.bit_accuracy is not None and r.watermark.bit_accuracy >= 0.9  # v2: a few tag bits
    assert r.watermark.false_positive_bound < 1e-6
    assert r.c2pa_state == "valid"
    assert r.c2pa.notes == ("signingCredential.untrusted",)
    assert r.actions == ("c2pa.created", "c2pa.watermarked.bound")
    assert r.c2pa.active is not None
    assert r.c2pa.active.digital_source_type == C.TRAINED_ALGORITHMIC_MEDIA
    assert r.signer is not None
    assert r.signer["common_name"] == "diffusion-gateway development signer"
    assert r.soft_binding_match is True
    gen = r.c2pa.active.generation
    assert gen is not None
    assert (gen["provider"], gen["model"], gen["seed"], gen["request_id"]) == (
        "local",
        "tiny-digits",
        7,
        "req-1",
    )
    assert gen["prompt_commitment"] == key.commit("prompt", "ab" * 32)
    assert "ab" * 32 not in json.dumps(r.to_dict())  # the prompt hash itself is not published


def test_its_jpeg_q75_copy_still_shows_the_watermark(pv: Provenance, stamped_digit: bytes) -> None:
    r = pv.verify(jpeg_copy(stamped_digit, 75))
    assert r.ok, r.reasons
    assert r.watermark.found
    assert r.c2pa_state == "absent"  # re-encoding drops the manifest; the mark survives


def test_an_unmarked_photo_fails(pv: Provenance, stamped_digit: bytes) -> None:
    r = pv.verify(encode(photo()))
    assert not r.ok
    assert not r.watermark.found
    assert r.watermark.hmac_valid is False
    assert r.c2pa_state == "absent"
    assert any("no provenance" in reason for reason in r.reasons)


def test_one_flipped_byte_makes_c2pa_invalid(pv: Provenance, stamped_digit: bytes) -> None:
    in_pixels = flip_byte(stamped_digit, png_chunk_offset(stamped_digit, b"IDAT") + 100)
    r = pv.verify(in_pixels)
    assert r.c2pa_state == "invalid"
    assert "assertion.dataHash.mismatch" in r.c2pa.failures
    assert not r.ok
    in_manifest = flip_byte(stamped_digit, png_chunk_offset(stamped_digit, b"caBX") + 400)
    r2 = pv.verify(in_manifest)
    assert r2.c2pa_state == "invalid"
    assert not r2.ok
    assert r2.watermark.found  # the pixels are intact, yet a broken manifest still fails the image


# ----------------------------------------------------------------------------- trust and policy


def test_trust_anchor_makes_the_manifest_trusted(pv: Provenance, stamped_digit: bytes, home: Path) -> None:
    root = (home / "keys" / "c2pa-root.pem").read_bytes()
    assert pv.verify(stamped_digit, trust_anchors_pem=root).c2pa_state == "trusted"
    other_root = make_dev_chain("someone else")[0]
    r = pv.verify(stamped_digit, trust_anchors_pem=other_root)
    assert r.c2pa_state == "valid"
    assert "signingCredential.untrusted" in r.c2pa.notes


def test_policy_requirements(pv: Provenance, stamped_digit: bytes, home: Path) -> None:
    root = (home / "keys" / "c2pa-root.pem").read_bytes()
    trusted = VerifyPolicy(require_c2pa="trusted", require_watermark=True, require_ai_disclosure=True)
    assert not pv.verify(stamped_digit, policy=trusted).ok
    assert pv.verify(stamped_digit, policy=trusted, trust_anchors_pem=root).ok
    signers = VerifyPolicy(allowed_signers=("prod signer",))
    assert "not in the policy's allowed_signers" in pv.verify(stamped_digit, policy=signers).reasons[0]
    jpeg = jpeg_copy(stamped_digit, 75)
    needs_c2pa = VerifyPolicy(require_c2pa="valid")
    assert pv.verify(jpeg).ok
    assert not pv.verify(jpeg, policy=needs_c2pa).ok
    assert not pv.verify(stamped_digit, request_id="another-request").ok


def test_policy_from_gateway_requirements_and_yaml(tmp_path: Path) -> None:
    from gateway.types import ProvenanceRequirements

    p = VerifyPolicy.from_requirements(ProvenanceRequirements(watermark_required=True, c2pa_required=True))
    assert (p.require_watermark, p.require_c2pa) == (True, "valid")
    f = tmp_path / "verify.yaml"
    f.write_text("require_watermark: true\nrequire_c2pa: trusted\n")
    assert VerifyPolicy.load(f).require_c2pa == "trusted"
    f.write_text("require_watermark: true\nrequire_c2pa: maybe\n")
    with pytest.raises(ConfigError, match=r"verify\.yaml:2: require_c2pa"):
        VerifyPolicy.load(f)


# ----------------------------------------------------------------------------- never strip provenance


def test_provider_c2pa_is_kept_as_an_ingredient(pv: Provenance) -> None:
    src = provider_signed(photo(1))
    st = pv.stamp(src, info=INFO, watermark=True, c2pa=True)
    assert (st.watermark, st.c2pa) == ("embedded", "signed")
    assert st.details["provider_c2pa"]["state"] == "valid"
    assert st.details["c2pa"]["ingredient"] is True
    r = pv.verify(st.data)
    assert r.ok, r.reasons
    assert r.actions == ("c2pa.opened", "c2pa.watermarked.bound")
    assert [m.signer["common_name"] for m in r.c2pa.ingredients] == ["provider-nova signer"]
    assert r.c2pa.ingredients[0].digital_source_type == C.TRAINED_ALGORITHMIC_MEDIA
    assert r.c2pa.ingredients[0].claim_generator == "provider-nova 1"


def test_provider_c2pa_untouched_when_our_signing_is_off(pv: Provenance) -> None:
    src = provider_signed(photo(1))
    st = pv.stamp(src, info=INFO, watermark=True, c2pa=False)
    assert st.data == src
    assert (st.watermark, st.c2pa) == ("absent", "provider")
    assert "re-encoding would strip it" in st.details["watermark_skipped"]
    r = pv.verify(st.data)
    assert r.ok
    assert r.c2pa.active is not None
    assert not r.c2pa.active.ours


def test_sdxl_mark_is_reported_as_provider_watermark(pv: Provenance) -> None:
    import importlib.util

    spec = importlib.util.find_spec("imwatermark")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("invisible-watermark not installed")
    # Load maxDct.py alone: the package __init__ imports torch and onnxruntime.
    path = Path(next(iter(spec.submodule_search_locations))) / "maxDct.py"
    mod_spec = importlib.util.spec_from_file_location("_maxdct", path)
    assert mod_spec is not None
    assert mod_spec.loader is not None
    maxdct = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(maxdct)
    import numpy as np

    from gateway.provenance.thirdparty import SDXL_BITS, _dwtdct_bits, _ll_u, detect_sdxl

    rgb = np.asarray(photo(1, size=320))
    for img in (
        rgb,
        np.asarray(photo(0, size=300)),
    ):  # our numpy decoder == invisible-watermark's, bit for bit
        reference = maxdct.EmbedMaxDct(wmLen=48).decode(
            np.ascontiguousarray(img[..., ::-1]).astype(np.float32)
        )
        assert (_dwtdct_bits(_ll_u(img) + 2 * 0.5, 48) == reference).all()
    enc = maxdct.EmbedMaxDct(list(SDXL_BITS), wmLen=48)  # what diffusers does: float BGR in, float out
    marked = np.clip(np.rint(enc.encode(rgb[..., ::-1].astype(np.float32))[..., ::-1]), 0, 255).astype(
        np.uint8
    )
    assert detect_sdxl(marked, "RGB").detected
    assert not detect_sdxl(rgb, "RGB").detected
    st = pv.stamp(encode(Image.fromarray(marked)), info=INFO, watermark=False, c2pa=False)
    assert (st.watermark, st.c2pa) == ("provider", "absent")
    assert st.details["third_party_marks"][0]["name"] == "sdxl"
    assert [m.name for m in pv.verify(st.data).third_party if m.detected] == ["sdxl"]


# ----------------------------------------------------------------------------- inputs


def test_small_images_are_signed_but_not_watermarked(pv: Provenance) -> None:
    st = pv.stamp(encode(digit_image(size=128)), info=INFO, watermark=True, c2pa=True)
    assert (st.watermark, st.c2pa) == ("absent", "signed")
    assert "needs at least 256x256" in st.details["watermark_skipped"]
    r = pv.verify(st.data)
    assert r.ok
    assert r.watermark.found is False
    assert r.actions == ("c2pa.created",)


def test_jpeg_and_rgba_inputs(pv: Provenance) -> None:
    st = pv.stamp(encode(photo(), "JPEG", quality=90), info=INFO, watermark=True, c2pa=False)
    assert (st.mime, st.watermark) == ("image/png", "embedded")
    rgba = photo().convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((256, 256)))
    st2 = pv.stamp(encode(rgba), info=INFO, watermark=True, c2pa=True)
    out = Image.open(io.BytesIO(st2.data))
    assert out.mode == "RGBA"
    assert out.getchannel("A").tobytes() == rgba.getchannel("A").tobytes()
    assert pv.verify(st2.data).ok
    with pytest.raises(BadResponse, match="cannot be stamped"):
        pv.stamp(b"not an image", info=INFO, watermark=True, c2pa=True)


def test_nothing_requested_leaves_bytes_alone(pv: Provenance, home: Path) -> None:
    src = encode(photo())
    st = pv.stamp(src, info=INFO, watermark=False, c2pa=False)
    assert (st.data, st.watermark, st.c2pa) == (src, "absent", "absent")


# ----------------------------------------------------------------------------- keys


def test_dev_keys_files_and_permissions(pv: Provenance, stamped_digit: bytes, home: Path) -> None:
    keys = home / "keys"
    for name in ("c2pa-signer.key", "watermark.key"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate((keys / "c2pa-signer.pem").read_bytes())
    root = x509.load_pem_x509_certificate((keys / "c2pa-root.pem").read_bytes())
    assert leaf.issuer == root.subject
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not any("PRIVATE KEY" in p.read_text() for p in keys.glob("c2pa-root*"))


def test_verify_never_creates_keys(tmp_path: Path) -> None:
    pv = Provenance(tmp_path / "empty")
    r = pv.verify(encode(photo()))
    assert not (tmp_path / "empty" / "keys").exists()
    assert r.watermark.hmac_valid is None
    assert r.watermark.reason == "no watermark key to verify with"


def test_rotation_keeps_old_marks_verifiable(pv: Provenance, stamped_digit: bytes, home: Path) -> None:
    old = pv.watermark_key(create=False)
    res = init_keys(home / "keys", force=True)
    assert len(res.retired) == 4
    new = pv.watermark_key(create=False)
    assert old is not None
    assert new is not None
    assert new.key_id != old.key_id
    r = pv.verify(jpeg_copy(stamped_digit, 75))
    assert r.watermark.found
    assert r.watermark.key_id == old.key_id_hex


def test_concurrent_first_use_makes_one_chain(home: Path) -> None:
    results = []

    def run() -> None:
        results.append(init_keys(home / "keys"))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r.created) for r in results) == 4
    assert len({r.watermark_key_id for r in results}) == 1


def test_production_settings_with_files_and_a_kms_callback(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root, leaf, key_pem = make_dev_chain("prod")
    (tmp_path / "chain.pem").write_bytes(leaf)
    (tmp_path / "key.pem").write_bytes(key_pem)
    (tmp_path / "root.pem").write_bytes(root)
    (tmp_path / "wm.key").write_text("11" * 32)
    base = {"dev_keys": False, "watermark": {"key_file": str(tmp_path / "wm.key")}}
    with_files = {
        **base,
        "c2pa": {"cert_chain": "chain.pem", "private_key": "key.pem", "trust_anchors": "root.pem"},
    }
    pv = Provenance(tmp_path, with_files)  # relative paths resolve against home
    st = pv.stamp(encode(photo()), info=INFO, watermark=True, c2pa=True)
    assert st.details["c2pa"]["signer_development"] is False
    r = pv.verify(st.data)
    assert r.c2pa_state == "trusted"
    assert r.signer is not None
    assert r.signer["common_name"] == "prod signer"
    assert not (tmp_path / "keys").exists()

    calls: list[int] = []
    private = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)

    def kms_sign(data: bytes) -> bytes:
        calls.append(len(data))
        return private.sign(data, ec.ECDSA(hashes.SHA256()))

    kms = Provenance(tmp_path, {**base, "c2pa": {"cert_chain": "chain.pem", "signer": kms_sign}})
    st2 = kms.stamp(encode(photo()), info=INFO, watermark=False, c2pa=True)
    assert calls
    assert kms.verify(st2.data, trust_anchors_pem=root).c2pa_state == "trusted"


def test_client_switches_are_accepted_settings(tmp_path: Path) -> None:
    pv = Provenance(tmp_path, {"watermark_remote": False, "c2pa_remote": True})
    assert pv.settings.watermark_remote is False
    with pytest.raises(ConfigError, match=r"provenance\.watermark_remot: Extra inputs"):
        Provenance(tmp_path, {"watermark_remot": False})


def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"provenance\.c2pa\.alg"):
        Provenance(tmp_path, {"c2pa": {"alg": "md5"}})
    with pytest.raises(ConfigError, match="dev_keys is false"):
        Provenance(tmp_path, {"dev_keys": False}).stamp(
            encode(photo()), info=INFO, watermark=False, c2pa=True
        )
    with pytest.raises(ConfigError, match=r"needs provenance\.c2pa\.private_key"):
        Provenance(tmp_path, {"c2pa": {"cert_chain": "x.pem"}}).keys.signing()
    (tmp_path / "x.pem").write_text("junk")
    with pytest.raises(ConfigError, match="cannot load"):
        Provenance(tmp_path, {"c2pa": {"cert_chain": "x.pem", "signer": "nope.nothing:sign"}}).keys.signing()


def test_no_secret_reaches_details_logs_or_reports(
    pv: Provenance, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        st = pv.stamp(encode(photo()), info=INFO, watermark=True, c2pa=True)
        report = json.dumps(pv.verify(st.data).to_dict())
    wm_secret = (home / "keys" / "watermark.key").read_text().strip()
    signer_key = (home / "keys" / "c2pa-signer.key").read_text()
    body = signer_key.splitlines()[1]
    for text in (repr(st.details), caplog.text, report, repr(pv.keys.signing())):
        assert wm_secret not in text
        assert body not in text


def test_verify_image_reads_files_with_the_default_home(stamped_digit: bytes, tmp_path: Path) -> None:
    import os

    f = tmp_path / "out.png"
    f.write_bytes(stamped_digit)
    home = Path(os.environ["GATEWAY_HOME"])  # conftest isolates it per test; the fixture home differs
    r = verify_image(f)
    assert r.source == str(f)
    assert r.c2pa_state == "valid"
    assert r.watermark.hmac_valid is None  # no keys in this home: only the manifest speaks
    assert not (home / "keys").exists()


@pytest.mark.slow
def test_a_generated_image_verifies(pv: Provenance) -> None:
    """The shipped tiny-digits model's real output: stamped, verified, and still marked after JPEG q75."""
    pytest.importorskip("diffusers")
    from importlib import resources

    from gateway.backends.base import BackendCall
    from gateway.backends.local import LocalBackend
    from gateway.types import ImageRequest

    if not (resources.files("gateway.models") / "tiny_digits" / "model_index.json").is_file():
        pytest.skip("tiny-digits weights are not in this checkout")
    backend = LocalBackend()
    try:
        req = ImageRequest(prompt="a handwritten 7", width=256, height=256, seed=3, n=2, steps=10)
        images = backend.generate(BackendCall(req, "tiny-digits", request_id="gen-1")).images
    finally:
        backend.close()
    for i, raw in enumerate(images):
        info = ProvenanceInfo("gen-1", "local", "tiny-digits", 3, "ef" * 32, index=i)
        st = pv.stamp(raw, info=info, watermark=True, c2pa=True)
        assert (st.watermark, st.c2pa, st.width, st.height) == ("embedded", "signed", 256, 256)
        r = pv.verify(st.data, request_id="gen-1")
        assert r.ok, r.reasons
        assert r.watermark.request_index == i
        assert pv.verify(jpeg_copy(st.data, 75)).watermark.found
