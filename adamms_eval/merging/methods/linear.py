"""linear: AdaMMS's merge (paper eq. 1), θ(α) = lerp(θ_base, f(θ_base), α), stored as its two end points."""
from __future__ import annotations

from .base import MergeMethod, Path, register


@register
class Linear(MergeMethod):
    name = "linear"
    reference = "AdaMMS (Du et al., CVPR 2025), eq. 1; mergekit linear"
    coefficient = "alpha"
    coefficient_range = (0.0, 1.0)
    default_alphas = "0:0.6:0.1"  # paper 4.4: α ≥ 0.7 collapses language ability; granularity 0.1
    needs_pretrained = False
    rowwise = True  # elementwise
    base_at = 0.0  # lerp(base, other, 0) is base exactly: the α = 0 candidate's answers are the base's own

    def path(self, key, base, other, theta0):
        return Path(base, other.to(base.dtype), "lerp")
