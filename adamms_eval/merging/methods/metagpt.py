"""metagpt (Zhou et al., 2024): τ_i scaled by ‖τ_i‖² / Σ_j ‖τ_j‖² over the whole language model, then summed."""
from __future__ import annotations

from .base import MergeMethod, _weighted_sum, register


@register
class MetaGPT(MergeMethod):
    name = "metagpt"
    reference = "MetaGPT (Zhou et al., 2024); not in mergekit"
    params = {}

    def __init__(self, values):
        super().__init__(values)
        self.scales: list[float] | None = None

    def prepare(self, task_vectors):
        sq = None
        for _, taus in task_vectors():
            s = [float(t.double().pow(2).sum()) for t in taus]
            sq = s if sq is None else [a + b for a, b in zip(sq, s)]
        total = sum(sq or [0.0])
        self.scales = [x / total for x in sq] if total > 0 else [1.0 / len(sq or [1, 1])] * len(sq or [1, 1])
        self.p["scales"] = self.scales

    def combiner(self, key, models, theta0):
        return lambda taus: _weighted_sum(taus, self.scales)
