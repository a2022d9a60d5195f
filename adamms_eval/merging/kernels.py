"""Task-vector merges computed chunk by chunk in fp32, and the TIES trim threshold.

Whole-tensor fp32 temporaries (τ_i, |τ_i|, a stacked copy, masks) cost ~50 bytes per element; on a
65M-row embedding that was seconds and gigabytes, and on a 7B model's 545M-element embedding it would be
tens of GB. Here every method works on CHUNK elements at a time (1 MB temporaries that stay in cache):
`merged_delta` hands each chunk's fp32 task vectors to the method and writes the result in the checkpoint
dtype, so memory does not grow with the tensor beyond the merged result itself. The exact top-k threshold
of TIES comes from a sampled bracket and one counting pass, with numpy's sort (faster than
torch.kthvalue) on the few percent at most that fall inside the bracket.

Boolean masks, `where` and `masked_fill` run several times slower than float ops on CPU, so:
- trim is `hardshrink` (keeps |x| > λ) with λ the largest fp32 below the threshold, i.e. |x| >= threshold;
- the election uses s = Σ d_i and the elected sign m = copysign(1, s) (a zero sum elects +, as
  mergekit): d_i agrees exactly when d_i·m > 0, so Σ_agreeing d_i = m · Σ max(d_i·m, 0) and the
  agreeing weight is Σ w_i·sign(max(d_i·m, 0)).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

CHUNK = 1 << 18        # elements per step: each fp32 temporary is 1 MB (stays in L2; measured fastest)
SAMPLE = 1 << 15       # fewest magnitudes drawn to bracket the k-th largest (more for tensors over 64M entries)
SAMPLE_MAX = 1 << 18   # most magnitudes drawn (reached at 512M entries, a 7B model's embedding)
BAND_LIMIT = 1 << 24   # most bracketed magnitudes kept (64 MB) before falling back to a full buffer


def spans(n: int) -> list[tuple[int, int]]:
    return [(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]


def _magnitudes(xf: torch.Tensor, t0: torch.Tensor, s: int, e: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """|x − θ0| in fp32 for the flat range [s, e) (never writes into x: .float() of fp32 is x itself)."""
    return torch.sub(xf[s:e].float(), t0[s:e].float(), out=out).abs_()


def kth_largest_magnitude(x: torch.Tensor, theta0: torch.Tensor, k: int) -> float:
    """The exact k-th largest |x − θ0| over the tensor, computed in fp32.

    Large tensors: a seeded sample brackets the k-th largest between two magnitudes lo <= hi, one pass
    counts the entries above hi, at hi and at lo and keeps those strictly between (a few percent), and
    the answer is read from those; bf16 task vectors take few distinct values, which is why the ties at
    the bracket's ends are counted instead of kept. If the answer is not in the bracket (unlikely) or
    the bracket holds too many entries, every magnitude goes into one fp32 buffer instead."""
    xf, t0 = x.reshape(-1), theta0.reshape(-1)
    n = xf.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} outside [1, {n}]")
    if n > 16 * SAMPLE:
        found = _kth_in_bracket(xf, t0, k, *_bracket(xf, t0, k))
        if found is not None:
            return found
    magnitude = torch.empty(n, dtype=torch.float32)
    for s, e in spans(n):
        _magnitudes(xf, t0, s, e, out=magnitude[s:e])
    return _kth_largest(magnitude.numpy(), k)


def _kth_largest(values: np.ndarray, k: int) -> float:
    # numpy's vectorised sort, not partition: introselect degrades when many entries tie with the answer,
    # as bf16 task vectors do (12 ns/el on a measured bracket, against 0.35 ns/el for the sort)
    values.sort()
    return float(values[values.size - k])


def _bracket(xf: torch.Tensor, t0: torch.Tensor, k: int) -> tuple[float, float]:
    """Magnitudes lo <= hi that hold the k-th largest between them with high probability."""
    n = xf.numel()
    # The bracket holds at most ~6·n/√size entries: a sample growing with n keeps it small on 7B-sized embeddings.
    size = min(max(SAMPLE, n >> 11), SAMPLE_MAX)
    picks = torch.randint(n, (size,), generator=torch.Generator().manual_seed(n))
    sample = torch.sub(xf[picks].float(), t0[picks].float()).abs_().numpy()
    # The k-th largest sits near ascending sample position (1 − p)·size, p = k/n; a binomial rank
    # is within 6 standard deviations of that except with probability ~1e-9.
    p = k / n
    centre, margin = (1 - p) * size, 6 * math.sqrt(size * p * (1 - p)) + 4
    i_lo, i_hi = max(int(centre - margin), 0), int(centre + margin)
    if i_hi >= size - 1:  # past the sample's top the bracket is open upwards (k is small: it holds the k largest)
        return float(np.partition(sample, i_lo)[i_lo]), math.inf
    ranked = np.partition(sample, [i_lo, i_hi])
    return float(ranked[i_lo]), float(ranked[i_hi])


def _kth_in_bracket(xf: torch.Tensor, t0: torch.Tensor, k: int, lo: float, hi: float) -> float | None:
    """The k-th largest magnitude if it lies in [lo, hi], else None. One pass counts the entries >= hi
    and > lo and keeps those strictly between; an answer at an end of the bracket (rare unless lo == hi)
    is confirmed by a second, counting-only pass."""
    if lo == hi:
        above, at_least = _count(xf, t0, lambda m: (m > np.float32(hi), m >= np.float32(hi)))
        return hi if above < k <= at_least else None
    lo32, hi32 = np.float32(lo), np.float32(hi)
    at_least_hi = above_lo = 0
    inside, held = [], 0
    for s, e in spans(xf.numel()):
        m = _magnitudes(xf, t0, s, e).numpy()
        over_lo, under_hi = m > lo32, m < hi32
        at_least_hi += m.size - np.count_nonzero(under_hi)
        above_lo += np.count_nonzero(over_lo)
        if held <= BAND_LIMIT:
            inside.append(m[over_lo & under_hi])
            held += inside[-1].size
    between = above_lo - at_least_hi
    rank = k - at_least_hi  # rank of the answer among the entries below hi
    if 1 <= rank <= between:
        return _kth_largest(np.concatenate(inside), rank) if held <= BAND_LIMIT else None
    if rank <= 0:  # the answer is hi if fewer than k entries are above it
        (above,) = _count(xf, t0, lambda m: (m > hi32,))
        return hi if above < k else None
    (at_least_lo,) = _count(xf, t0, lambda m: (m >= lo32,))  # else it is lo if at least k are >= lo
    return lo if k <= at_least_lo else None


def _count(xf: torch.Tensor, t0: torch.Tensor, masks) -> list[int]:
    """Entries counted by each boolean mask that `masks(magnitudes)` returns, over the tensor."""
    totals = None
    for s, e in spans(xf.numel()):
        counts = [np.count_nonzero(mask) for mask in masks(_magnitudes(xf, t0, s, e).numpy())]
        totals = counts if totals is None else [a + b for a, b in zip(totals, counts)]
    return totals


def _below(threshold: float) -> float:
    """The largest fp32 value below `threshold`: for fp32 x, |x| > it exactly when |x| >= threshold."""
    return float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))


def elect(deltas: list[torch.Tensor], weights: tuple[float, ...], normalize: bool) -> torch.Tensor:
    """TIES sign election ('sum') and disjoint merge of the fp32 deltas w_i·trim(τ_i), which are
    overwritten; normalize divides by the weights of the agreeing entries (no agreeing entry: 0)."""
    elected = deltas[0].clone()
    for d in deltas[1:]:
        elected.add_(d)
    # A sum of -0.0 happens only where every delta is ±0, so nothing agrees there whatever its sign.
    elected = torch.copysign(torch.ones_like(elected), elected, out=elected)
    agreeing = [d.mul_(elected).clamp_min_(0) for d in deltas]  # |d_i| where d_i has the elected sign
    divisor = None
    if normalize:
        divisor = torch.sign(agreeing[0]).mul_(weights[0])
        for a, w in zip(agreeing[1:], weights[1:]):
            divisor.add_(torch.sign(a), alpha=w)
        if min(weights) > 0:
            # Where nothing agrees the numerator is 0 and any nonzero divisor gives 0; every other divisor
            # is a sum of positive weights, so at least the smallest weight, and clamping leaves it alone.
            divisor.clamp_min_(min(weights))
        else:
            divisor[divisor == 0] = 1.0
    merged = agreeing[0]
    for a in agreeing[1:]:
        merged.add_(a)
    if divisor is not None:
        merged.div_(divisor)
    return merged.mul_(elected)


class NonFiniteChunk(ValueError):
    """A task-vector chunk holds NaN or Inf: an input does (or x − θ0 overflows); the caller names which."""


def nonfinite(t: torch.Tensor) -> bool:
    # min or max is NaN or Inf exactly when some entry is; one pass, no temporary (isfinite(t).all() is 25x slower)
    return t.is_floating_point() and t.numel() > 0 and not bool(torch.isfinite(torch.stack(torch.aminmax(t))).all())


def task_vector_chunks(theta0: torch.Tensor, models: list[torch.Tensor]):
    """(start, end, [τ_i]) over the flat tensor: fresh fp32 chunks of x_i − θ0 that the caller may overwrite.

    Each chunk is checked for NaN / Inf while it is in cache (NonFiniteChunk): a NaN or Inf in x_i or θ0 always
    reaches τ_i, so the inputs of a task-vector merge need no pass of their own over memory."""
    t0 = theta0.reshape(-1)
    xs = [m.reshape(-1) for m in models]
    for s, e in spans(t0.numel()):
        base = t0[s:e].float()
        taus = [x[s:e].to(torch.float32, copy=True).sub_(base) for x in xs]
        if any(nonfinite(t) for t in taus):
            raise NonFiniteChunk(f"entries [{s}, {e})")
        yield s, e, taus


def merged_delta(theta0: torch.Tensor, models: list[torch.Tensor], dtype: torch.dtype,
                 combine: Callable[[list[torch.Tensor]], torch.Tensor]) -> torch.Tensor:
    """The merged task vector, combine([τ_i chunk]) chunk after chunk in order, stored in `dtype`.

    Chunks come in ascending order, so a combine that draws random numbers consumes one stream."""
    out = torch.empty(theta0.numel(), dtype=dtype)
    for s, e, taus in task_vector_chunks(theta0, models):
        out[s:e] = combine(taus)
    return out.view(theta0.shape)


def ties_delta(theta0: torch.Tensor, models: list[torch.Tensor], weights: tuple[float, ...],
               thresholds: list[float | None], normalize: bool, dtype: torch.dtype) -> torch.Tensor:
    """Merged task vector of TIES: Σ_agreeing w_i·trim(τ_i) [/ Σ_agreeing w_i], stored in `dtype`.

    trim keeps the entries with |τ_i| >= thresholds[i] (None, or a threshold <= 0, keeps all)."""
    shrink = [None if thr is None or thr <= 0 else _below(thr) for thr in thresholds]

    def combine(taus):
        for i, (w, lam) in enumerate(zip(weights, shrink)):
            if lam is not None:
                taus[i] = F.hardshrink(taus[i], lam)
            if w != 1.0:
                taus[i].mul_(w)
        return elect(taus, weights, normalize)

    return merged_delta(theta0, models, dtype, combine)
