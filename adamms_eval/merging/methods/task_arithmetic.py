"""task_arithmetic (Ilharco et al., 2023): θ0 + λ·Σ w_i·τ_i."""
from __future__ import annotations

from .base import MergeMethod, Param, _bool, _weighted_sum, _weights, register


@register
class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    reference = "Task Arithmetic (Ilharco et al., ICLR 2023); mergekit task_arithmetic"
    rowwise = True  # elementwise
    params = {"weight": Param(1.0, _weights, "task-vector weight, one or base,other"),
              "normalize": Param(False, _bool, "divide by the sum of weights")}

    def combiner(self, key, models, theta0):
        return lambda taus: _weighted_sum(taus, self.p["weight"], self.p["normalize"])
