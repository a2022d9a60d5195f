"""Merge methods on plain tensors, against the formulas of merge-methods.md."""
import pytest
import torch

from adamms_eval.errors import AdammsError
from adamms_eval.merging.methods import make_method
from adamms_eval.merging.methods.ties import global_thresholds


def _path_at(method, base, other, theta0, lam, key="layers.0.mlp.up_proj.weight"):
    return method.path(key, base, other, theta0).point(lam)


def test_linear_is_lerp_and_alpha0_is_base_bits():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 32, generator=g).bfloat16()
    other = torch.randn(64, 32, generator=g).bfloat16()
    m = make_method("linear")
    assert torch.equal(_path_at(m, base, other, None, 0.0), base)
    expected = ((1 - 0.3) * base.float() + 0.3 * other.float()).bfloat16()
    got = _path_at(m, base, other, None, 0.3)
    # fp32 arithmetic rounded once to bf16: at most one bf16 ulp from the fp32 formula
    assert torch.allclose(got.float(), expected.float(), rtol=2 ** -7, atol=0)


def test_task_arithmetic_formula():
    t0, a, b = torch.randn(3, 50, 20).unbind(0)
    m = make_method("task_arithmetic", {"weight": "0.3,0.7"})
    got = _path_at(m, a, b, t0, 0.8)
    torch.testing.assert_close(got, t0 + 0.8 * (0.3 * (a - t0) + 0.7 * (b - t0)))
    mn = make_method("task_arithmetic", {"weight": "0.3,0.7", "normalize": "true"})
    torch.testing.assert_close(_path_at(mn, a, b, t0, 1.0), t0 + (0.3 * (a - t0) + 0.7 * (b - t0)) / 1.0)


def test_ties_hand_example_from_notes():
    t0 = torch.zeros(4)
    a = torch.tensor([1.0, -2.0, 3.0, -4.0])
    b = torch.tensor([-1.0, 2.0, 1.0, 4.0])
    m = make_method("ties", {"density": 0.5, "normalize": "false"})
    # trim keeps [3,-4] and [2,4]; signs +: 3+... -> elected signs [+,+,+,+]; disjoint sum
    assert torch.equal(_path_at(m, a, b, t0, 1.0), torch.tensor([0.0, 2.0, 3.0, 4.0]))
    mean = make_method("ties", {"density": 0.5})
    assert torch.equal(_path_at(mean, a, b, t0, 1.0), torch.tensor([0.0, 2.0, 3.0, 4.0]))


def test_ties_normalize_divides_by_agreeing_weights():
    t0 = torch.zeros(3)
    a = torch.tensor([1.0, 2.0, -1.0])
    b = torch.tensor([3.0, -1.0, -3.0])
    m = make_method("ties", {"density": 1.0})
    # elected signs: +, +, -; entry 0: both agree -> mean 2; entry 1: only a -> 2; entry 2: both -> -2
    assert torch.equal(_path_at(m, a, b, t0, 1.0), torch.tensor([2.0, 2.0, -2.0]))


def test_dare_is_seeded_and_rescales():
    t0 = torch.zeros(1000)
    a, b = torch.randn(2, 1000).unbind(0)

    def dropped_a(**params):  # weight 0 on the other model: the merged task vector is drop(τ_a)
        m = make_method("dare_linear", {"density": 0.3, "weight": "1,0", **params})
        return m.path("layers.0.mlp.up_proj.weight", a, b, t0).b

    x1, x2, x3 = (dropped_a(seed=seed, rescale="density") for seed in (5, 5, 6))
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    kept = x1 != 0
    assert 0.2 < kept.float().mean() < 0.4
    torch.testing.assert_close(x1[kept], a[kept] / 0.3)
    l1 = dropped_a(seed=5)
    assert torch.equal(l1 != 0, kept)  # the same mask whatever the rescale
    torch.testing.assert_close(l1.abs().sum(), a.abs().sum())
    torch.testing.assert_close(l1[kept], a[kept] * (a.abs().sum() / a[kept].abs().sum()))


def test_dare_ties_density1_equals_ties():
    t0, a, b = torch.randn(3, 40, 8).unbind(0)
    x = _path_at(make_method("dare_ties", {"density": 1.0}), a, b, t0, 1.0)
    y = _path_at(make_method("ties", {"density": 1.0, "normalize": "false"}), a, b, t0, 1.0)
    torch.testing.assert_close(x, y)


def test_global_threshold_is_exact_kth_largest():
    g = torch.Generator().manual_seed(1)
    tensors = [torch.randn(n, generator=g) * s for n, s in ((1000, 1.0), (333, 3.0), (4097, 0.01))]

    def tvs():
        for i, t in enumerate(tensors):
            yield str(i), [t, -2 * t]

    for density in (0.5, 0.1, 0.9):
        thr = global_thresholds(tvs, density)
        allabs = torch.cat([t.abs() for t in tensors])
        k = int(density * allabs.numel())
        kth = allabs.sort(descending=True).values[k - 1].item()
        assert thr[0] == kth
        assert thr[1] == pytest.approx(2 * kth, rel=1e-6)


def test_metagpt_scales_by_squared_norms():
    t0 = torch.zeros(10)
    a, b = torch.ones(10), 2 * torch.ones(10)
    m = make_method("metagpt")
    m.prepare(lambda: iter([("k", [a - t0, b - t0])]))
    assert m.scales == pytest.approx([0.2, 0.8])
    torch.testing.assert_close(_path_at(m, a, b, t0, 1.0), 0.2 * a + 0.8 * b)


@pytest.mark.parametrize("name,params,needle", [
    ("ties", {"density": "0"}, "density"),
    ("ties", {"density": "1.5"}, "density"),
    ("ties", {"colour": "red"}, "unknown parameter"),
    ("nope", {}, "unknown merge method"),
])
def test_bad_parameters_are_named(name, params, needle):
    with pytest.raises(AdammsError, match=needle):
        make_method(name, params)


def test_alpha_outside_range():
    with pytest.raises(AdammsError, match="outside"):
        make_method("linear").check_coefficient(1.5)


def test_presets_expand_to_the_papers_baseline_settings():
    from adamms_eval.merging.methods import PRESETS, default_candidates
    ties = make_method("paper_ties")
    assert ties.name == "ties" and ties.p["density"] == 0.5 and ties.p["trim"] == "global"
    assert ties.p["normalize"] is False and ties.describe()["preset"] == "paper_ties"
    assert make_method("paper_task_arithmetic").p["weight"] == (0.5, 0.5)
    dare = make_method("paper_dare_linear", {"density": 0.3})  # explicit parameters override the preset
    assert dare.p["density"] == 0.3 and dare.p["rescale"] == "density"
    assert make_method("paper_dare_ties").p["rescale"] == "density"
    assert "preset" not in make_method("ties").describe()
    assert set(PRESETS) == {"paper_task_arithmetic", "paper_ties", "paper_dare_linear", "paper_dare_ties",
                            "paper_metagpt"}
    assert default_candidates("linear") == "0:0.6:0.1"
    assert default_candidates("paper_ties") == default_candidates("metagpt") == "0.2:1.4:0.2"
    assert make_method("ties").param_names() == {"weight", "density", "normalize", "trim", "lambda"}
    with pytest.raises(AdammsError, match="did you mean paper_ties"):
        make_method("papr_ties")


def test_ties_global_threshold_covers_every_entry_it_trims(zoo):
    """trim=global: the k-th largest |τ| is taken over the same entries the trim is applied to (vocab rows too)."""
    from adamms_eval.merging.merger import open_merger
    merger = open_merger(zoo["qwen2_vl"], zoo["llava_ov_hf"], "ties", {"density": 0.3, "trim": "global"},
                         pretrained=zoo["qwen2_lm"])
    merger.prepare()
    taus = [[], []]
    for e in merger.plan.merged:
        base, other, theta0 = (t.float() for t in merger.inputs(e))
        taus[0].append((base - theta0).abs().flatten())
        taus[1].append((other - theta0).abs().flatten())
    assert any(e.vocab is not None for e in merger.plan.merged)
    for thr, parts in zip(merger.method.global_thresholds, taus):
        allabs = torch.cat(parts)
        k = int(0.3 * allabs.numel())
        assert thr == allabs.sort(descending=True).values[k - 1].item()


def test_dare_masks_are_the_documented_counter_based_draw():
    """Entry j of model i is kept when u_j < density, u_j the j % RNG_BLOCK-th little-endian 16-bit piece of
    SFC64(SeedSequence((seed, crc32(key), i, j // RNG_BLOCK))); any split into pieces gives the same mask."""
    import zlib
    import numpy as np
    from adamms_eval.merging.methods.dare import RNG_BLOCK, KeepMask
    n, key, density = 2 * RNG_BLOCK + 1234, "model.layers.3.mlp.down_proj.weight", 0.3
    whole = KeepMask(7, key, 1, density).next(n).bool()
    u = np.concatenate([np.random.SFC64(np.random.SeedSequence([7, zlib.crc32(key.encode()), 1, b]))
                        .random_raw(RNG_BLOCK // 4).astype("<u8").view("<u2") for b in range(3)])[:n]
    assert torch.equal(whole, torch.from_numpy(u < round(density * 65536)))
    pieces = KeepMask(7, key, 1, density)
    assert torch.equal(torch.cat([pieces.next(k).bool() for k in (5, RNG_BLOCK - 5, 1, RNG_BLOCK // 2, RNG_BLOCK // 2 + 1233)]),
                       whole)
    other = KeepMask(7, key, 0, density).next(n).bool()  # the other model's mask: independent of this one
    p, q, both = whole.float().mean(), other.float().mean(), (whole & other).float().mean()
    sd = (density * (1 - density) / n) ** 0.5
    assert abs(p - density) < 5 * sd and abs(q - density) < 5 * sd and abs(both - density ** 2) < 5 * sd
    assert not torch.equal(whole[:RNG_BLOCK], whole[RNG_BLOCK:2 * RNG_BLOCK])  # blocks differ
    recording = KeepMask(7, key, 1, density, record=True)
    sizes = (5, RNG_BLOCK - 5, 1, RNG_BLOCK // 2, RNG_BLOCK // 2 + 1233)
    drawn = [recording.next(k) for k in sizes]
    replay = recording.replay()
    assert all(torch.equal(replay.next(k), d) for k, d in zip(sizes, drawn))  # replayed pieces are the drawn ones


def test_dare_l1_merge_keeps_the_entries_the_counting_pass_drew():
    """Over several compute chunks: the l1 merge pass replays the counting pass's masks, which are the
    documented draw, so the kept entries are exactly KeepMask's and the L1 norm of the task vector is kept."""
    from adamms_eval.merging.kernels import CHUNK
    from adamms_eval.merging.methods.dare import KeepMask
    n, key = 3 * CHUNK + 17, "layers.0.mlp.up_proj.weight"
    t0, a, b = torch.zeros(n), torch.randn(n), torch.randn(n)
    m = make_method("dare_linear", {"density": 0.4, "weight": "1,0", "seed": 3})
    dropped = m.path(key, a, b, t0).b
    assert torch.equal(dropped != 0, KeepMask(3, key, 0, 0.4).next(n).bool())
    torch.testing.assert_close(dropped.abs().sum(), a.abs().sum())
