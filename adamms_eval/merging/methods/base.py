"""What every merge method is: a per-tensor path θ(λ) = A + λ·B, declared parameters with mergekit's names and
defaults, the coefficient's name and range, and the registry the methods add themselves to (one module each).

Arithmetic is fp32; A and B are stored in the base tensor's dtype and `Path.point` applies one torch
kernel to them, so a streamed merge and an in-place switch of a loaded model give the same bits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ...errors import AdammsError, closest, suggest
from ..kernels import merged_delta


@dataclass
class Path:
    a: torch.Tensor
    b: torch.Tensor
    kind: str  # "lerp": lerp(a, b, λ); "axpy": a + λ·b
    private_b: bool = False  # b belongs to this path alone (not a checkpoint tensor): a one-off point may reuse it

    def point(self, lam: float, out: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "lerp":
            return torch.lerp(self.a, self.b, lam, out=out)
        return torch.add(self.a, self.b, alpha=lam, out=out)

    def to(self, device=None, non_blocking: bool = False, pin: bool = False) -> "Path":
        a, b = (t.to(device, non_blocking=non_blocking) for t in (self.a, self.b))
        if pin:
            a, b = a.pin_memory(), b.pin_memory()
        return Path(a, b, self.kind)


def _bool(v) -> bool:
    if isinstance(v, bool):
        return v
    if str(v).lower() in ("1", "true", "yes"):
        return True
    if str(v).lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"expected true/false, got {v!r}")


def _weights(v) -> tuple[float, float]:
    """`weight=0.5` for both models or `weight=0.3,0.7` for (base, other)."""
    if isinstance(v, (int, float)):
        return float(v), float(v)
    parts = [float(x) for x in str(v).split(",")] if isinstance(v, str) else [float(x) for x in v]
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) != 2:
        raise ValueError("give one weight or two (base,other)")
    return parts[0], parts[1]


def _density(v) -> float:
    d = float(v)
    if not 0.0 < d <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {d}")
    return d


def _choice(*options):
    def parse(v):
        v = str(v).lower()
        if v not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {v!r}")
        return v
    return parse


def _rescale(v) -> str:
    """mergekit's rescale=true keeps the L1 norm; 'density' divides by density (paper / peft)."""
    s = str(v).lower()
    if s in ("density", "l1"):
        return s
    return "l1" if _bool(v) else "none"


Combine = Callable[[list[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Param:
    default: object
    parse: Callable
    help: str


REGISTRY: dict[str, type["MergeMethod"]] = {}


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


class MergeMethod:
    name = ""
    reference = ""                     # where the method comes from, and mergekit's name for it
    coefficient = "lambda"             # the parameter that moves along the path
    coefficient_range = (0.0, None)
    base_at: float | None = None       # the coefficient whose point is the base model bit for bit (None: none is)
    # λ = 0 is θ0 (the bare language model) and λ = 1 the method's own merge; the grid brackets 1 and the
    # mean of two task vectors (λ = 0.5 with weight 1), so the usual settings are interior candidates.
    default_alphas = "0.2:1.4:0.2"
    needs_pretrained = True
    statistics_include_vocab = False  # whole-model statistics (prepare) over embeddings / lm_head rows too
    rowwise = False  # the path of rows [s, e) is the path's rows [s, e): merged block by block when written
    params: dict[str, Param] = {}
    preset: str | None = None

    @classmethod
    def param_names(cls) -> set[str]:
        """Every name this method accepts: its parameters and its coefficient."""
        return set(cls.params) | {cls.coefficient}

    def __init__(self, values: dict):
        unknown = set(values) - set(self.params) - {self.coefficient}
        if unknown:
            raise AdammsError(f"{self.name}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(self.params) or 'none'}{self._did_you_mean(sorted(unknown)[0])}")
        self.p = {}
        for name, spec in self.params.items():
            try:
                self.p[name] = spec.parse(values.get(name, spec.default))
            except (TypeError, ValueError) as e:
                raise AdammsError(f"{self.name}: bad value for {name}: {e}") from None
        self.default_coefficient = float(values[self.coefficient]) if self.coefficient in values else None

    @classmethod
    def _did_you_mean(cls, name: str) -> str:
        """A close name of this method's, else a close parameter of another method (and which methods take it)."""
        own = suggest(name, cls.param_names())
        if own:
            return own
        other = closest(name, {p for m in REGISTRY.values() for p in m.params})
        if other is None:
            return ""
        owners = ", ".join(m for m, c in REGISTRY.items() if other in c.params)
        return f"; did you mean {other}? (a parameter of {owners}, not of {cls.name})"

    @classmethod
    def in_range(cls, lam: float) -> bool:
        lo, hi = cls.coefficient_range
        return lam == lam and lam >= lo and (hi is None or lam <= hi)

    @classmethod
    def range_text(cls) -> str:
        lo, hi = cls.coefficient_range
        return f"[{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"

    @classmethod
    def check_coefficient(cls, lam: float) -> float:
        """The one check of the coefficient's range (settings, candidates, set(), merge all use it)."""
        lam = float(lam)
        if not cls.in_range(lam):
            lo, hi = cls.coefficient_range
            rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise AdammsError(f"{cls.name}: {cls.coefficient} {lam} is outside {rng}; pick a value in range")
        return lam

    def describe(self, prepared: bool = True) -> dict:
        """Name, coefficient and parameters; with prepared, also the whole-model statistics `prepare` computed
        (MetaGPT's scales), as the merge record and the cache identity keep them."""
        params = self.p if prepared else {k: v for k, v in self.p.items() if k in self.params}
        out = {"method": self.name, "coefficient": self.coefficient, "params": params}
        return {**out, "preset": self.preset} if self.preset else out

    def prepare(self, task_vectors: Callable[[], Iterator[tuple[str, list[torch.Tensor]]]]) -> None:
        """Whole-model statistics (MetaGPT norms, global TIES threshold); most methods need none."""

    def path(self, key: str, base: torch.Tensor, other: torch.Tensor, theta0: torch.Tensor | None) -> Path:
        models = [base, other]
        delta = merged_delta(theta0, models, base.dtype, self.combiner(key, models, theta0))
        return Path(theta0.to(base.dtype), delta, "axpy", private_b=True)

    def combiner(self, key: str, models: list[torch.Tensor], theta0: torch.Tensor) -> Combine:
        """The function that merges one chunk of fp32 task vectors [τ_base, τ_other] (fresh: may be overwritten)."""
        raise NotImplementedError


def _sum_into_first(chunks):
    for t in chunks[1:]:
        chunks[0].add_(t)
    return chunks[0]


def _weighted_sum(taus, weights, normalize=False):
    """Σ w_i·τ_i [/ Σ w_i], in place in the first chunk."""
    out = _sum_into_first([t.mul_(w) for t, w in zip(taus, weights)])
    return out.div_(sum(weights)) if normalize else out
