"""dare_linear / dare_ties (Yu et al., 2024): drop each task-vector entry with probability 1 − density, rescale,
then sum (linear) or elect signs as TIES does. Masks are seeded per tensor: the same on every run."""
from __future__ import annotations

import zlib

import torch

from ..kernels import elect, task_vector_chunks
from .base import Combine, MergeMethod, Param, _bool, _density, _rescale, _sum_into_first, _weights, register


class _Dare(MergeMethod):
    params = {"weight": Param(1.0, _weights, "task-vector weight, one or base,other"),
              "density": Param(1.0, _density, "probability of keeping each task-vector entry"),
              "rescale": Param("l1", _rescale, "true/l1: keep the L1 norm (mergekit); density: divide by density; false"),
              "normalize": Param(False, _bool, "divide by the sum of weights"),
              "seed": Param(0, int, "random seed of the drop masks")}

    def _generators(self, key: str, n: int) -> list[torch.Generator]:
        # One generator per (seed, tensor, model), drawn over the flat tensor in order: reproducible whatever
        # the order tensors are visited in, and the same masks whatever the chunk size.
        base = self.p["seed"] * 1_000_003 + zlib.crc32(key.encode()) * 2
        return [torch.Generator().manual_seed(base + i) for i in range(n)]

    def _keep(self, tau: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Zero each entry of an fp32 chunk with probability 1 − density, in place."""
        return tau.mul_(torch.rand(tau.numel(), generator=g).lt_(self.p["density"]).view(tau.shape))

    def _rescales(self, key: str, models, theta0) -> list[float]:
        """Factor of each dropped task vector: 1/density, 1, or ‖τ_i‖₁/‖drop(τ_i)‖₁ over the whole tensor
        (l1 needs one counting pass that draws the same masks as the merge pass)."""
        if self.p["rescale"] == "density":
            return [1.0 / self.p["density"]] * len(models)
        if self.p["rescale"] == "none":
            return [1.0] * len(models)
        total, kept = [0.0] * len(models), [0.0] * len(models)
        gens = self._generators(key, len(models))
        for _, _, taus in task_vector_chunks(theta0, models):
            for i, (t, g) in enumerate(zip(taus, gens)):
                total[i] += float(t.abs().sum(dtype=torch.float64))
                kept[i] += float(self._keep(t, g).abs().sum(dtype=torch.float64))
        return [a / b if b > 0 else 1.0 for a, b in zip(total, kept)]

    def dropper(self, key: str, models, theta0) -> Combine:
        """[τ_i chunk] -> [drop(τ_i)·w_i chunk], in place."""
        weights = self.p["weight"]
        if self.p["density"] >= 1.0:
            return lambda taus: [t.mul_(w) for t, w in zip(taus, weights)]
        scales = [s * w for s, w in zip(self._rescales(key, models, theta0), weights)]
        gens = self._generators(key, len(models))
        return lambda taus: [self._keep(t, g).mul_(s) for t, g, s in zip(taus, gens, scales)]


@register
class DareLinear(_Dare):
    name = "dare_linear"
    reference = "DARE (Yu et al., ICML 2024) then a linear sum; mergekit dare_linear"

    def combiner(self, key, models, theta0):
        drop = self.dropper(key, models, theta0)
        total = sum(self.p["weight"]) if self.p["normalize"] else None

        def combine(taus):
            merged = _sum_into_first(drop(taus))
            return merged if total is None else merged.div_(total)
        return combine


@register
class DareTies(_Dare):
    name = "dare_ties"
    reference = "DARE (Yu et al., ICML 2024) then TIES sign election; mergekit dare_ties"

    def combiner(self, key, models, theta0):
        drop = self.dropper(key, models, theta0)
        return lambda taus: elect(drop(taus), self.p["weight"], self.p["normalize"])
