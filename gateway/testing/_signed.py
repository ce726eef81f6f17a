"""PNGs carrying a C2PA manifest signed by a test chain, as OpenAI and Gemini outputs carry theirs.

The chain (a P-256 root CA and a leaf, made once per process with the same code as the gateway's
development chain) stands in for the provider's: its root is :func:`provider_root_pem`, so a test can
check the provider manifest as "trusted" with that anchor and as "valid, untrusted" without it. The
manifest claims ``c2pa.created`` with the IPTC ``trainedAlgorithmicMedia`` source type and names the
provider as claim generator. c2pa-python is imported only when the first image is signed.
"""

from __future__ import annotations

import functools
import threading

from ._http import png_bytes

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _chain(name: str) -> tuple[bytes, bytes, bytes]:
    from ..provenance.keys import make_dev_chain

    return make_dev_chain(f"{name} test provider")


def provider_root_pem(name: str) -> bytes:
    """The root certificate (PEM) of ``name``'s test signing chain."""
    return _chain(name)[0]


@functools.lru_cache(maxsize=128)
def signed_png(width: int, height: int, seed: int, provider: str) -> bytes:
    """A real PNG of ``width x height`` with a C2PA manifest signed as ``provider`` (cached)."""
    from ..provenance import c2pa_sign
    from ..provenance.keys import SigningMaterial

    _root, leaf, key = _chain(provider)
    manifest = {
        "claim_generator_info": [{"name": f"{provider}-fake", "version": "1"}],
        "title": "image.png",
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": TRAINED,
                            "softwareAgent": {"name": provider},
                        }
                    ]
                },
            }
        ],
    }
    with _lock:  # one signing at a time: a burst of first requests signs each image once, not N times
        return c2pa_sign.sign(
            png_bytes(width, height, seed),
            "image/png",
            manifest,
            SigningMaterial(leaf, "es256", private_key_pem=key),
        )


__all__ = ["provider_root_pem", "signed_png"]
