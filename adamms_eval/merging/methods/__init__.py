"""Merge methods as small registered classes with declared parameters (names and defaults of mergekit), one
module each, and the AdaMMS authors' baseline settings as presets.

Every method turns one tensor into a path θ(λ) = A + λ·B, so a caller can move along the method's
coefficient without recomputing trim masks or signs:
- linear (AdaMMS, eq. 1): θ(α) = lerp(θ_base, f(θ_base), α); stored as its two end points.
- task-vector methods: θ(λ) = θ0 + λ·τ_merged with τ_i = θ_i − θ0.
A new method is a module here with a `@register`ed MergeMethod subclass, imported below.
"""
from __future__ import annotations

from ...errors import AdammsError
# each module registers its methods, in the order users see them listed
from . import linear, task_arithmetic, ties, dare, metagpt  # noqa: F401,I001
from .base import REGISTRY, MergeMethod, Param, Path, register

__all__ = ["REGISTRY", "PRESETS", "MergeMethod", "Param", "Path", "register", "resolve_method", "make_method",
           "default_candidates"]

# The AdaMMS authors' baseline settings (paper 4.1, Tables 1-2; their code: task arithmetic as the mean of the
# task vectors, TIES with a global top-50% trim and a disjoint sum, DARE dividing by the keep rate).
PRESETS: dict[str, tuple[str, dict]] = {
    "paper_task_arithmetic": ("task_arithmetic", {"weight": 0.5}),
    "paper_ties": ("ties", {"density": 0.5, "trim": "global", "normalize": False}),
    "paper_dare_linear": ("dare_linear", {"density": 0.5, "rescale": "density", "weight": 0.5}),
    "paper_dare_ties": ("dare_ties", {"density": 0.5, "rescale": "density", "normalize": False}),
    "paper_metagpt": ("metagpt", {}),
}


def resolve_method(name: str, params: dict | None = None) -> tuple[str, dict]:
    """A method or preset name -> (method name, parameters); explicit parameters override a preset's."""
    if name in PRESETS:
        method, preset = PRESETS[name]
        return method, {**preset, **(params or {})}
    if name not in REGISTRY:
        import difflib
        known = list(REGISTRY) + list(PRESETS)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise AdammsError(f"unknown merge method '{name}'; {hint}choose one of {', '.join(known)}")
    return name, dict(params or {})


def make_method(name: str, params: dict | None = None) -> "MergeMethod":
    """Build a method from its name or a preset name (PRESETS) and its parameters."""
    method, values = resolve_method(name, params)
    m = REGISTRY[method](values)
    m.preset = name if name in PRESETS else None
    return m


def default_candidates(name: str) -> str:
    """The default candidate grid of a method's (or preset's) coefficient, as `start:stop:step`."""
    return REGISTRY[resolve_method(name)[0]].default_alphas
