"""Input images of an edit: decode-safety first, then what their provenance says.

An edit hands the gateway bytes it did not make. Before policy, routing or the ledger see the request,
every input (and the mask) is checked here, so a bad file costs nothing and never reaches a provider:

* **decode-safety**: the format by magic bytes (PNG, JPEG, WebP only), a byte cap, a pixel cap read
  from the header *before* any pixel is decoded, Pillow's decompression-bomb guard as an error, and a
  full decode (a truncated file fails there). A mask must have the first image's size. Each refusal is
  an :class:`~gateway.errors.InvalidRequestError` (exit 2) that says which input and why.
* **provenance**: the input's C2PA manifest (read and validated with c2pa-python against the configured
  trust anchors), our own watermark, and known third-party marks. The findings go into the decision
  (``Decision.inputs``), the policy's ``input_image`` rules, the audit record and the output's manifest,
  where each input becomes an ingredient.

Pure CPU work on bytes already in memory: no network, no clock.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidRequestError

if TYPE_CHECKING:
    from .policy import PolicySet
    from .provenance import Provenance
    from .types import Context, Decision, ImageRequest

INPUT_MIMES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/webp": (b"RIFF",),
}
MAX_INPUT_BYTES = 32 * 1024 * 1024
MAX_INPUT_PIXELS = 4096 * 4096
AI_SOURCE_TYPES = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia",
    "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia",
)
C2paFound = Literal["trusted", "valid", "invalid", "absent"]


def sniff_input(data: bytes) -> str | None:
    """The MIME type by magic bytes (WebP also needs its ``WEBP`` tag), or None."""
    for mime, magics in INPUT_MIMES.items():
        if any(data.startswith(m) for m in magics) and (mime != "image/webp" or data[8:12] == b"WEBP"):
            return mime
    return None


@dataclass(frozen=True)
class InputImage:
    """One checked input (``role`` image or mask) and what its provenance says."""

    index: int
    role: Literal["image", "mask"]
    sha256: str
    mime: str
    width: int
    height: int
    size_bytes: int
    c2pa: C2paFound = "absent"
    c2pa_signer: str | None = None
    c2pa_claim_generator: str | None = None
    c2pa_error: str | None = None
    ai_generated: bool = False  # a manifest declares AI media, or our / a known mark is in the pixels
    watermark: Literal["ours", "third_party", "absent", "not_checked"] = "not_checked"
    third_party_marks: tuple[str, ...] = ()
    watermark_request_nonce: str | None = None
    data: bytes = field(default=b"", repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The audit / decision / ``--json`` view (no pixels)."""
        return {
            "index": self.index,
            "role": self.role,
            "sha256": self.sha256,
            "mime": self.mime,
            "width": self.width,
            "height": self.height,
            "bytes": self.size_bytes,
            "c2pa": self.c2pa,
            "c2pa_signer": self.c2pa_signer,
            "c2pa_claim_generator": self.c2pa_claim_generator,
            "c2pa_error": self.c2pa_error,
            "ai_generated": self.ai_generated,
            "watermark": self.watermark,
            "third_party_marks": list(self.third_party_marks),
        }


def check_decodable(
    data: bytes, what: str, *, max_bytes: int = MAX_INPUT_BYTES, max_pixels: int = MAX_INPUT_PIXELS
) -> tuple[str, int, int]:
    """Refuse what is not a safe, whole PNG/JPEG/WebP; return (mime, width, height)."""
    from PIL import Image

    if not data:
        raise InvalidRequestError(f"{what} is empty")
    if len(data) > max_bytes:
        raise InvalidRequestError(f"{what} is {len(data)} bytes, above the {max_bytes}-byte limit")
    mime = sniff_input(data)
    if mime is None:
        raise InvalidRequestError(f"{what} is not a PNG, JPEG or WebP image (by its first bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise InvalidRequestError(
                        f"{what} is {width}x{height} ({width * height} pixels), above the "
                        f"{max_pixels}-pixel limit (decompression-bomb guard)"
                    )
                frames = int(getattr(img, "n_frames", 1))
                if frames > 1:
                    raise InvalidRequestError(f"{what} is animated ({frames} frames); send one frame")
                img.load()  # decodes every byte: a truncated or corrupt file fails here
    except InvalidRequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequestError(f"{what} exceeds Pillow's decompression-bomb limit") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else type(exc).__name__
        raise InvalidRequestError(f"{what} does not decode ({reason}): {mime} data is damaged") from None
    return mime, width, height


def check_inputs(
    request: ImageRequest, *, max_bytes: int = MAX_INPUT_BYTES, max_pixels: int = MAX_INPUT_PIXELS
) -> tuple[InputImage, ...]:
    """Decode-safety for every input and the mask (no provenance yet); raise on the first bad one."""
    out: list[InputImage] = []
    for i, data in enumerate(request.images):
        mime, w, h = check_decodable(data, f"input image {i}", max_bytes=max_bytes, max_pixels=max_pixels)
        out.append(InputImage(i, "image", _sha(data), mime, w, h, len(data), data=data))
    if request.mask is not None:
        mime, w, h = check_decodable(request.mask, "mask", max_bytes=max_bytes, max_pixels=max_pixels)
        first = out[0]
        if (w, h) != (first.width, first.height):
            raise InvalidRequestError(
                f"mask is {w}x{h} but input image 0 is {first.width}x{first.height}; they must match"
            )
        out.append(InputImage(len(out), "mask", _sha(request.mask), mime, w, h, len(request.mask),
                              data=request.mask))  # fmt: skip
    return tuple(out)


def read_provenance(inputs: Sequence[InputImage], provenance: Provenance | None) -> tuple[InputImage, ...]:
    """Add what each input image's C2PA manifest and marks say (masks are not read: they are ours)."""
    from dataclasses import replace

    if provenance is None:
        return tuple(inputs)
    out = []
    for inp in inputs:
        if inp.role != "image":
            out.append(inp)
            continue
        report = provenance.verify(inp.data)
        c2 = report.c2pa
        manifests = ([c2.active] if c2.active else []) + list(c2.ingredients)
        declared_ai = any(m.digital_source_type in AI_SOURCE_TYPES for m in manifests)
        marks = tuple(m.name for m in report.third_party if m.detected)
        wm = report.watermark
        mark: Literal["ours", "third_party", "absent", "not_checked"]
        mark = "ours" if wm.found else "third_party" if marks else "absent"
        if not wm.applicable and mark == "absent":
            mark = "not_checked"
        signer = None
        if c2.active is not None:
            signer = c2.active.signer.get("common_name") or c2.active.signer.get("issuer")
        out.append(
            replace(
                inp,
                c2pa=c2.state,
                c2pa_signer=signer,
                c2pa_claim_generator=c2.active.claim_generator if c2.active else None,
                c2pa_error=c2.error or (", ".join(c2.failures) or None),
                ai_generated=declared_ai or wm.found or bool(marks),
                watermark=mark,
                third_party_marks=marks,
                watermark_request_nonce=wm.nonce,
            )
        )
    return tuple(out)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mask_to_repaint(mask: bytes, size: tuple[int, int] | None = None) -> Any:
    """The user's mask as a float array in [0, 1], 1 = repaint (white, or alpha 0 where alpha is used).

    A mask with a real alpha channel (some pixel not opaque) is read by its alpha: transparent means
    repaint, as in OpenAI's convention; otherwise by its luminance: white means repaint. Backends turn
    this into their provider's convention (Bedrock: black = repaint).
    """
    import numpy as np
    from PIL import Image

    img: Image.Image = Image.open(io.BytesIO(mask))
    img.load()
    if size is not None and img.size != size:
        img = img.resize(size, Image.Resampling.NEAREST)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        alpha = np.asarray(img.convert("RGBA"))[..., 3].astype(np.float64) / 255.0
        if alpha.min() < 1.0:
            return 1.0 - alpha
    return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def repaint_mask_png(mask: bytes, *, repaint_white: bool, size: tuple[int, int] | None = None) -> bytes:
    """The mask as an 8-bit PNG in a provider's convention (binary: >= 0.5 counts as repaint)."""
    import numpy as np
    from PIL import Image

    m = mask_to_repaint(mask, size) >= 0.5
    arr = np.where(m == repaint_white, 255, 0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


__all__ = [
    "INPUT_MIMES",
    "MAX_INPUT_BYTES",
    "MAX_INPUT_PIXELS",
    "InputImage",
    "alpha_mask_png",
    "check_decodable",
    "check_inputs",
    "edit_options",
    "edit_record",
    "govern_inputs",
    "image_bytes",
    "mask_to_repaint",
    "read_provenance",
    "repaint_mask_png",
    "sniff_input",
]


def govern_inputs(
    policy: PolicySet,
    provenance: Provenance | None,
    request: ImageRequest,
    context: Context,
) -> tuple[tuple[InputImage, ...], Decision]:
    """Step 1 for an edit: decode-safety, provenance, ``input_image`` rules, then the configured
    output classifiers over the input images. Returns the checked inputs and the decision, which
    records what was found on each input (``Decision.inputs``).

    An input a classifier flags denies the request whatever the rule's action says: an input cannot be
    quarantined, and sending it on would hand the provider the very image the policy holds back.
    """
    from dataclasses import replace

    inputs = read_provenance(check_inputs(request), provenance)
    decision = policy.evaluate(request, context, inputs)
    findings = policy.check_outputs(request.images, decision, context) if decision.allowed else []
    if findings:
        rule_ids = tuple(dict.fromkeys(f.rule_id for f in findings))
        reasons = tuple(f"{f.rule_id}: input image {f.index}: {f.reason}" for f in findings)
        decision = replace(decision, allowed=False, rule_ids=rule_ids, reasons=reasons)
    return inputs, replace(decision, inputs=tuple(i.to_dict() for i in inputs))


def alpha_mask_png(mask: bytes) -> bytes:
    """The mask as an RGBA PNG whose alpha is 0 where to repaint (OpenAI's ``/images/edits`` convention)."""
    import numpy as np
    from PIL import Image

    m = mask_to_repaint(mask) >= 0.5
    h, w = m.shape
    arr = np.zeros((h, w, 4), dtype=np.uint8)
    arr[..., 3] = np.where(m, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _audit_view(i: InputImage) -> dict[str, Any]:
    keep = ("sha256", "mime", "c2pa", "c2pa_signer", "ai_generated", "watermark")
    return {k: getattr(i, k) for k in keep}


def edit_record(request: ImageRequest, inputs: Sequence[InputImage]) -> dict[str, Any]:
    """The audit fields of an edit: each input's hash and provenance status, the mask's hash, the mode."""
    images = [i for i in inputs if i.role == "image"]
    if not images:  # planning refused before inspection: hash what was sent
        images = [InputImage(n, "image", _sha(d), sniff_input(d) or "?", 0, 0, len(d)) for n, d in
                  enumerate(request.images)]  # fmt: skip
    return {
        "edit_mode": request.mode,
        "strength": request.strength,
        "inputs": [_audit_view(i) for i in images],
        "mask_sha256": _sha(request.mask) if request.mask is not None else None,
    }


def image_bytes(value: Any, what: str = "input image") -> bytes:
    """Bytes from what users pass as an image: bytes, a path, a GeneratedImage, or a PIL image."""
    import os
    from pathlib import Path

    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str | os.PathLike):
        try:
            return Path(value).read_bytes()
        except OSError as exc:
            raise InvalidRequestError(f"{what} {os.fspath(value)!r} cannot be read: {exc.strerror}") from None
    data = getattr(value, "data", None)  # GeneratedImage
    if isinstance(data, bytes):
        return data
    if hasattr(value, "save") and hasattr(value, "size"):  # a PIL image: encode losslessly
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    raise InvalidRequestError(f"{what} must be bytes, a path, a GeneratedImage or a PIL image")


def edit_options(
    image_or_images: Any, mask: Any, strength: float | None, mode: str | None, options: dict[str, Any]
) -> dict[str, Any]:
    """``Gateway.edit``'s arguments as ``generate`` options (images as encoded bytes)."""
    many = isinstance(image_or_images, list | tuple)
    images = tuple(image_bytes(x) for x in (image_or_images if many else [image_or_images]))
    if not images:
        raise InvalidRequestError("edit needs at least one input image")
    out = {**options, "images": images}
    if mask is not None:
        out["mask"] = image_bytes(mask, "mask")
    if strength is not None:
        out["strength"] = strength
    if mode is not None:
        out["mode"] = mode
    return out
