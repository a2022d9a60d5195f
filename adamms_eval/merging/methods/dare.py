"""dare_linear / dare_ties (Yu et al., 2024): drop each task-vector entry with probability 1 − density, rescale,
then sum (linear) or elect signs as TIES does.

Masks are counter-based, the same on every run, whatever the chunk size, the order tensors are visited in or the
device: entry j of model i's task vector of tensor `key` is kept when u_j < density, u_j a 16-bit uniform drawn in
fixed blocks of RNG_BLOCK entries, block b from numpy's SFC64 seeded with SeedSequence((seed, crc32(key), i, b))
(numpy keeps bit-generator streams stable across versions). That is ~7x faster than torch.rand's Mersenne
Twister stream, which dominated DARE's time; the keep probability is density rounded to 1/65536.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from ..kernels import elect, task_vector_chunks
from .base import Combine, MergeMethod, Param, _bool, _density, _rescale, _sum_into_first, _weights, register


class _Dare(MergeMethod):
    params = {"weight": Param(1.0, _weights, "task-vector weight, one or base,other"),
              "density": Param(1.0, _density, "probability of keeping each task-vector entry"),
              "rescale": Param("l1", _rescale, "true/l1: keep the L1 norm (mergekit); density: divide by density; false"),
              "normalize": Param(False, _bool, "divide by the sum of weights"),
              "seed": Param(0, int, "random seed of the drop masks")}

    def _masks(self, key: str, n: int, record: bool = False) -> list["KeepMask"]:
        return [KeepMask(self.p["seed"], key, i, self.p["density"], record) for i in range(n)]

    @staticmethod
    def _keep(tau: torch.Tensor, mask: "KeepMask") -> torch.Tensor:
        """Zero the dropped entries of an fp32 chunk, in place (chunks of one tensor come in ascending order)."""
        return tau.mul_(mask.next(tau.numel()).view(tau.shape))

    def _rescales(self, key: str, models, theta0) -> tuple[list[float], list["KeepMask"]]:
        """Factor of each dropped task vector: 1/density, 1, or ‖τ_i‖₁/‖drop(τ_i)‖₁ over the whole tensor, and the
        masks for the merge pass. l1 needs a counting pass over the same masks: it records them (one bit per
        entry) and the merge pass replays them instead of drawing them again."""
        if self.p["rescale"] != "l1":
            factor = 1.0 / self.p["density"] if self.p["rescale"] == "density" else 1.0
            return [factor] * len(models), self._masks(key, len(models))
        total, kept = [0.0] * len(models), [0.0] * len(models)
        masks = self._masks(key, len(models), record=True)
        for _, _, taus in task_vector_chunks(theta0, models):
            for i, (t, m) in enumerate(zip(taus, masks)):  # fp32 sums of 1 MB chunks, added up in float64
                total[i] += float(t.abs_().sum())
                kept[i] += float(self._keep(t, m).sum())
        return [a / b if b > 0 else 1.0 for a, b in zip(total, kept)], [m.replay() for m in masks]

    def dropper(self, key: str, models, theta0) -> Combine:
        """[τ_i chunk] -> [drop(τ_i)·w_i chunk], in place."""
        weights = self.p["weight"]
        if self.p["density"] >= 1.0:
            return lambda taus: [t.mul_(w) for t, w in zip(taus, weights)]
        rescales, masks = self._rescales(key, models, theta0)
        scales = [s * w for s, w in zip(rescales, weights)]
        return lambda taus: [self._keep(t, m).mul_(s) for t, m, s in zip(taus, masks, scales)]


RNG_BLOCK = 1 << 18  # entries per seeded block of the masks; a fixed unit, not the compute chunk


class KeepMask:
    """The keep mask of one task vector (seed, tensor, model), handed out in consecutive pieces. With `record`,
    the pieces are also kept packed (n/8 bytes) for `replay`, which hands the same pieces out again without
    drawing them (drawing is ~10x the cost of unpacking)."""

    def __init__(self, seed: int, key: str, model: int, density: float, record: bool = False):
        self.entropy = [int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode()), int(model)]
        self.threshold = min(round(float(density) * 65536), 65536)
        self.pos = 0
        self._block, self._bits = -1, None
        self._recorded: list[tuple[np.ndarray, int]] | None = [] if record else None

    def replay(self) -> "MaskReplay":
        return MaskReplay(self._recorded)

    def _uniforms(self, block: int) -> np.ndarray:
        if block != self._block:  # little-endian 16-bit pieces of the 64-bit outputs, whatever the machine
            raw = np.random.SFC64(np.random.SeedSequence(self.entropy + [block])).random_raw(RNG_BLOCK // 4)
            self._block, self._bits = block, raw.astype("<u8", copy=False).view("<u2")
        return self._bits

    def next(self, n: int) -> torch.Tensor:
        """The mask (uint8 0/1: multiplying by it is faster than by a bool) of the next n entries."""
        s, e = self.pos, self.pos + n
        self.pos = e
        pieces = []
        while s < e:
            block, offset = divmod(s, RNG_BLOCK)
            take = min(e - s, RNG_BLOCK - offset)
            pieces.append(self._uniforms(block)[offset:offset + take] < self.threshold)
            s += take
        keep = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        if self._recorded is not None:
            self._recorded.append((np.packbits(keep), n))
        return torch.from_numpy(keep.view(np.uint8))


class MaskReplay:
    """A recorded KeepMask's pieces again, in the order and sizes they were drawn in."""

    def __init__(self, recorded: list[tuple[np.ndarray, int]]):
        self._pieces = iter(recorded)

    def next(self, n: int) -> torch.Tensor:
        packed, size = next(self._pieces)
        if size != n:  # the merge pass must ask for the pieces the counting pass drew
            raise RuntimeError(f"mask replay asked for {n} entries, recorded {size}")
        return torch.from_numpy(np.unpackbits(packed, count=n))


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
