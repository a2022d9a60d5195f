"""ties (Yadav et al., 2023): trim each task vector to its largest entries, elect a sign per entry, average the
agreeing ones (or sum them: the paper's disjoint merge); trim per tensor (mergekit) or over the whole language model."""
from __future__ import annotations

import torch

from ..kernels import kth_largest_magnitude, ties_delta
from .base import MergeMethod, Param, Path, _bool, _choice, _density, _weights, register


@register
class Ties(MergeMethod):
    name = "ties"
    reference = "TIES-Merging (Yadav et al., NeurIPS 2023); mergekit ties"
    params = {"weight": Param(1.0, _weights, "task-vector weight, one or base,other"),
              "density": Param(1.0, _density, "fraction of each task vector kept by magnitude"),
              "normalize": Param(True, _bool, "divide by the weights of agreeing entries (false = disjoint sum)"),
              "trim": Param("tensor", _choice("tensor", "global"),
                            "top-K per tensor (mergekit) or over the whole language model (paper's baseline)")}

    # trim=global: the threshold is taken over every entry it is applied to, embeddings / lm_head rows included
    statistics_include_vocab = True

    def __init__(self, values):
        super().__init__(values)
        self.global_thresholds: list[float] | None = None

    def prepare(self, task_vectors):
        if self.p["trim"] == "global" and self.p["density"] < 1.0:
            self.global_thresholds = global_thresholds(task_vectors, self.p["density"])

    def thresholds(self, models: list[torch.Tensor], theta0: torch.Tensor) -> list[float | None]:
        """Trim threshold of each task vector: entries with |τ_i| >= it are kept (None: all)."""
        density = self.p["density"]
        if density >= 1.0:
            return [None] * len(models)
        if self.global_thresholds is not None:
            return self.global_thresholds
        # k as mergekit; entries tied with the k-th largest magnitude are kept too
        return [kth_largest_magnitude(x, theta0, max(1, int(density * x.numel()))) for x in models]

    def path(self, key, base, other, theta0):
        models = [base, other]
        delta = ties_delta(theta0, models, self.p["weight"], self.thresholds(models, theta0),
                           self.p["normalize"], base.dtype)
        return Path(theta0.to(base.dtype), delta, "axpy", private_b=True)


def global_thresholds(task_vectors, density: float) -> list[float]:
    """Exact k-th largest |τ_i| over all tensors, by radix selection on fp32 bit patterns (2 passes)."""
    counts = None
    for _, taus in task_vectors():
        if counts is None:
            counts = [0] * len(taus)
        counts = [c + t.numel() for c, t in zip(counts, taus)]
    ks = [max(1, int(density * n)) for n in counts]
    hi = [torch.zeros(1 << 16, dtype=torch.int64) for _ in ks]
    for _, taus in task_vectors():
        for h, t in zip(hi, taus):
            h += torch.bincount((t.abs().flatten().view(torch.int32) >> 16).long(), minlength=1 << 16)
    picks = [_select_bin(h, k) for h, k in zip(hi, ks)]
    lo = [torch.zeros(1 << 16, dtype=torch.int64) for _ in ks]
    for _, taus in task_vectors():
        for h, t, (bin_hi, _) in zip(lo, taus, picks):
            bits = t.abs().flatten().view(torch.int32)
            sel = bits[(bits >> 16) == bin_hi]
            h += torch.bincount((sel & 0xFFFF).long(), minlength=1 << 16)
    out = []
    for h, (bin_hi, k_rest) in zip(lo, picks):
        bin_lo, _ = _select_bin(h, k_rest)
        out.append(torch.tensor([(bin_hi << 16) | bin_lo], dtype=torch.int32).view(torch.float32).item())
    return out


def _select_bin(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """Bin holding the k-th largest value, and the rank of that value inside the bin."""
    from_top = hist.flip(0).cumsum(0)
    idx = int(torch.searchsorted(from_top, torch.tensor(k)).item())
    before = int(from_top[idx - 1]) if idx > 0 else 0
    return len(hist) - 1 - idx, k - before
