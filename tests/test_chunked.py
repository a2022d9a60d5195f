"""The chunked kernels against whole-tensor formulas (sort for top-k, mergekit's sign election) and chunk sizes."""
import pytest
import torch

from adamms_eval.merging import kernels as chunked
from adamms_eval.merging.methods import make_method


@pytest.fixture
def small_steps(monkeypatch):
    """Many chunks and a sampled bracket already on tensors of ~10^5 entries."""
    monkeypatch.setattr(chunked, "CHUNK", 1 << 12)
    monkeypatch.setattr(chunked, "SAMPLE", 1 << 10)
    answered = []
    in_bracket = chunked._kth_in_bracket

    def spy(*args):
        found = in_bracket(*args)
        answered.append(found is not None)
        return found

    monkeypatch.setattr(chunked, "_kth_in_bracket", spy)
    return answered


def _task_vectors(kind: str, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, θ0) pairs whose |x − θ0| has the distributions that matter: continuous, the few distinct values of
    bf16 differences, many exact zeros (weights a fine-tune left unchanged), a single value."""
    if kind == "continuous":
        return torch.randn(n, generator=g), torch.zeros(n)
    theta0 = (0.02 * torch.randn(n, generator=g)).bfloat16()
    if kind == "bf16":
        return (theta0.float() + 2e-3 * torch.randn(n, generator=g)).bfloat16(), theta0
    if kind == "mostly_unchanged":
        x = theta0.clone()
        moved = torch.randperm(n, generator=g)[: n // 3]
        x[moved] = (x[moved].float() + 1e-3 * torch.randn(moved.numel(), generator=g)).bfloat16()
        return x, theta0
    return theta0.clone(), theta0  # "unchanged": every magnitude is 0


@pytest.mark.parametrize("kind", ["continuous", "bf16", "mostly_unchanged", "unchanged"])
def test_kth_largest_magnitude_is_exact(small_steps, kind):
    n = 100_003
    x, theta0 = _task_vectors(kind, n, torch.Generator().manual_seed(3))
    before = x.clone()
    descending = (x.float() - theta0.float()).abs().sort(descending=True).values
    for k in (1, 5, n // 10, n // 2, n // 2 + 1, 9 * n // 10, n):
        assert chunked.kth_largest_magnitude(x, theta0, k) == descending[k - 1].item(), k
    assert torch.equal(x, before)
    # the sampled bracket answers the usual densities itself (the full-buffer fallback is for rare cases)
    assert all(small_steps[2:5]), small_steps


def _reference_ties(theta0, models, weights, density, normalize):
    """mergekit's TIES on whole fp32 tensors: top-k by sort, sum sign election, masked (weighted) mean."""
    deltas = []
    for x, w in zip(models, weights):
        tau = x.float() - theta0.float()
        k = max(1, int(density * tau.numel()))
        thr = tau.abs().flatten().sort(descending=True).values[k - 1]
        deltas.append(w * torch.where(tau.abs() >= thr, tau, torch.zeros_like(tau)))
    stacked = torch.stack(deltas)
    majority = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = torch.sign(stacked) == majority
    merged = (stacked * agree).sum(0)
    if not normalize:
        return merged
    divisor = (torch.tensor(weights).view(-1, *([1] * theta0.dim())) * agree).sum(0)
    return merged / torch.where(divisor == 0, torch.ones_like(divisor), divisor)


@pytest.mark.parametrize("params", [
    {"density": 0.5},
    {"density": 0.3, "weight": "0.3,0.7"},
    {"density": 0.5, "normalize": "false"},
    {"density": 1.0, "weight": "2,0.5"},
    {"density": 0.2, "weight": "1,-0.5"},
])
def test_chunked_ties_equals_whole_tensor_formula(small_steps, params):
    g = torch.Generator().manual_seed(7)
    theta0 = torch.randn(300, 170, generator=g)
    a = theta0 + 0.02 * torch.randn(theta0.shape, generator=g)
    b = theta0 + 0.02 * torch.randn(theta0.shape, generator=g)
    cancel = torch.rand(theta0.shape, generator=g) < 0.05
    b[cancel] = (2 * theta0 - a)[cancel]  # τ_b = −τ_a: a zero sum, where mergekit elects +
    b[torch.rand(theta0.shape, generator=g) < 0.05] = theta0[0, 0]
    inputs = [t.clone() for t in (a, b, theta0)]
    method = make_method("ties", params)
    path = method.path("model.layers.0.mlp.up_proj.weight", a, b, theta0)
    expected = _reference_ties(theta0, [a, b], method.p["weight"], method.p["density"], method.p["normalize"])
    assert torch.equal(path.b, expected)
    assert all(torch.equal(t, u) for t, u in zip((a, b, theta0), inputs)), "inputs were modified"


def test_bf16_ties_rounds_the_fp32_result_once(small_steps):
    x, theta0 = _task_vectors("bf16", 40_000, torch.Generator().manual_seed(1))
    y = (theta0.float() - 3e-3 * torch.randn(40_000, generator=torch.Generator().manual_seed(2))).bfloat16()
    method = make_method("ties", {"density": 0.4})
    got = method.path("k", x, y, theta0).b
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, _reference_ties(theta0, [x, y], (1.0, 1.0), 0.4, True).bfloat16())


@pytest.mark.parametrize("kind", ["continuous", "bf16"])
def test_bracket_answers_exactly_or_not_at_all(small_steps, kind):
    """Whatever bracket [lo, hi] the sample gives: the k-th largest when it lies inside (ends included), else None."""
    n = 50_000
    x, theta0 = _task_vectors(kind, n, torch.Generator().manual_seed(5))
    xf, t0 = x.reshape(-1), theta0.reshape(-1)
    ascending = (x.float() - theta0.float()).abs().sort().values.tolist()
    g = torch.Generator().manual_seed(6)
    for _ in range(12):
        k = int(torch.randint(1, n + 1, (1,), generator=g))
        truth = ascending[n - k]
        i, j = sorted(torch.randint(0, n, (2,), generator=g).tolist())
        below = max([v for v in ascending[: n - k] if v < truth], default=truth)  # truth is then the band's least
        for lo, hi in ((ascending[i], ascending[j]), (truth, ascending[j]), (ascending[i], truth), (truth, truth),
                       (below, ascending[-1])):
            if lo > hi:
                continue
            found = chunked._kth_in_bracket(xf, t0, k, lo, hi)
            assert found == (truth if lo <= truth <= hi else None), (k, lo, hi, truth)


@pytest.mark.parametrize("name,params", [
    ("task_arithmetic", {"weight": "0.3,0.7", "normalize": "true"}),
    ("metagpt", {}),
    ("dare_linear", {"density": 0.3, "rescale": "density"}),
    ("dare_linear", {"density": 0.6, "normalize": "true"}),
    ("dare_ties", {"density": 0.5, "seed": 3}),
    ("ties", {"density": 0.3}),
])
def test_task_vector_methods_do_not_depend_on_the_chunk_size(monkeypatch, name, params):
    """Many small chunks give what one whole-tensor chunk gives: the same masks, signs and sums."""
    g = torch.Generator().manual_seed(11)
    theta0 = torch.randn(300, 170, generator=g).bfloat16()
    a, b = ((theta0.float() + 0.01 * torch.randn(theta0.shape, generator=g)).bfloat16() for _ in range(2))
    inputs = [t.clone() for t in (a, b, theta0)]

    def merged(chunk):
        monkeypatch.setattr(chunked, "CHUNK", chunk)
        method = make_method(name, params)
        if name == "metagpt":
            method.prepare(lambda: iter([("k", [a.float() - theta0.float(), b.float() - theta0.float()])]))
        return method.path("model.layers.0.mlp.up_proj.weight", a, b, theta0).b

    whole, pieces = merged(1 << 20), merged(1 << 12)
    assert whole.dtype == torch.bfloat16 and whole.abs().max() > 0
    if params.get("rescale", "l1") == "l1" and name.startswith("dare"):
        # the L1 factor sums in another order: at most one bf16 rounding apart
        torch.testing.assert_close(pieces, whole, rtol=2 ** -7, atol=0)
        assert (pieces != whole).float().mean() < 1e-3
    else:
        assert torch.equal(pieces, whole)
    assert all(torch.equal(t, u) for t, u in zip((a, b, theta0), inputs)), "inputs were modified"
