"""Merge methods as small registered classes with declared parameters (names and defaults of mergekit).

Every method turns one tensor into a path θ(λ) = A + λ·B, so a caller can move along the method's
coefficient without recomputing trim masks or signs:
- linear (AdaMMS, eq. 1): θ(α) = lerp(θ_base, f(θ_base), α); stored as its two end points.
- task-vector methods: θ(λ) = θ0 + λ·τ_merged with τ_i = θ_i − θ0.
Arithmetic is fp32; A and B are stored in the base tensor's dtype and `Path.point` applies one torch
kernel to them, so a streamed merge and an in-place switch of a loaded model give the same bits.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from .errors import AdammsError
from .chunked import elect, kth_largest_magnitude, merged_delta, task_vector_chunks, ties_delta


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


class MergeMethod:
    name = ""
    coefficient = "lambda"             # the parameter that moves along the path
    coefficient_range = (0.0, None)
    # λ = 0 is θ0 (the bare language model) and λ = 1 the method's own merge; the grid brackets 1 and the
    # mean of two task vectors (λ = 0.5 with weight 1), so the usual settings are interior candidates.
    default_alphas = "0.2:1.4:0.2"
    needs_pretrained = True
    statistics_include_vocab = False  # whole-model statistics (prepare) over embeddings / lm_head rows too
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
                              f"known: {', '.join(self.params) or 'none'}")
        self.p = {}
        for name, spec in self.params.items():
            try:
                self.p[name] = spec.parse(values.get(name, spec.default))
            except (TypeError, ValueError) as e:
                raise AdammsError(f"{self.name}: bad value for {name}: {e}") from None
        self.default_coefficient = float(values[self.coefficient]) if self.coefficient in values else None

    def check_coefficient(self, lam: float) -> float:
        lo, hi = self.coefficient_range
        lam = float(lam)
        if lam != lam or lam < lo or (hi is not None and lam > hi):
            rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise AdammsError(f"{self.name}: {self.coefficient} {lam} is outside {rng}; pick a value in range")
        return lam

    def describe(self) -> dict:
        out = {"method": self.name, "coefficient": self.coefficient, "params": self.p}
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


@register
class Linear(MergeMethod):
    name = "linear"
    coefficient = "alpha"
    coefficient_range = (0.0, 1.0)
    default_alphas = "0:0.6:0.1"  # paper 4.4: α ≥ 0.7 collapses language ability; granularity 0.1
    needs_pretrained = False

    def path(self, key, base, other, theta0):
        return Path(base, other.to(base.dtype), "lerp")


def _sum_into_first(chunks):
    for t in chunks[1:]:
        chunks[0].add_(t)
    return chunks[0]


def _weighted_sum(taus, weights, normalize=False):
    """Σ w_i·τ_i [/ Σ w_i], in place in the first chunk."""
    out = _sum_into_first([t.mul_(w) for t, w in zip(taus, weights)])
    return out.div_(sum(weights)) if normalize else out


@register
class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    params = {"weight": Param(1.0, _weights, "task-vector weight, one or base,other"),
              "normalize": Param(False, _bool, "divide by the sum of weights")}

    def combiner(self, key, models, theta0):
        return lambda taus: _weighted_sum(taus, self.p["weight"], self.p["normalize"])


@register
class Ties(MergeMethod):
    name = "ties"
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

    def combiner(self, key, models, theta0):
        drop = self.dropper(key, models, theta0)
        return lambda taus: elect(drop(taus), self.p["weight"], self.p["normalize"])


@register
class MetaGPT(MergeMethod):
    name = "metagpt"
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
