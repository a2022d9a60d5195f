"""`adamms merge` and `LazyMerge` on tiny checkpoints in the Table 6 layouts (Cambrian <- Yi-VL, θ0 a plain LLaMA):
the key lists and shapes are those of tests/fixtures/released/layouts_34b.py at toy sizes, with random values.

Checked against equation (1) computed here in fp32, independently of the merger: every language-model tensor is
lerp(base, other, α), every connector / tower tensor is the base's bit for bit; `--dtype` writes the asked dtype with
the fp32 merge's values cast once; writing block by block gives the same bytes as whole tensors."""
import json

import pytest
import torch
from helpers import lerp, state_dict
from safetensors.torch import save_file
from test_real_layouts import layouts  # also puts the fixtures folder on sys.path
from test_table6_layouts import LM_KEY

import layouts_34b  # noqa: E402
from adamms_eval.cli import main

LLAMA = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 96}
CAMBRIAN = {**layouts.load("cambrian-34b")[0], **LLAMA, "vision_hidden_size": 32,
            "mm_vision_tower_aux_token_len_list": [4, 4, 4, 64], "query_num_list": [4], "image_token_len": 4,
            "num_of_vision_sampler_layers": 2, "connector_depth": 2}
TOWER = {**layouts_34b.YI_VL_TOWER, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "image_size": 28}
YI_VL = {**layouts.load("yi-vl-34b")[0], **LLAMA, "mm_hidden_size": 48}
YI = {**layouts.load("yi-34b")[0], **LLAMA}
ALPHA = 0.4


def checkpoint(root, name, cfg, dtype, seed, vocab=None):
    cfg = {**cfg, "torch_dtype": str(dtype).removeprefix("torch.")} | ({"vocab_size": vocab} if vocab else {})
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=g).to(dtype) for k, s in layouts_34b.shapes(name, cfg, TOWER).items()}
    d = root / f"{name}-{seed}"
    d.mkdir()
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("table6_tiny")
    return {"cambrian": checkpoint(root, "cambrian-34b", CAMBRIAN, torch.float32, 1),
            "yi_vl": checkpoint(root, "yi-vl-34b", YI_VL, torch.bfloat16, 2),
            "yi_vl_small_vocab": checkpoint(root, "yi-vl-34b", YI_VL, torch.bfloat16, 3, vocab=80),
            "yi": checkpoint(root, "yi-34b", YI, torch.bfloat16, 4)}


def merge(tmp_path, base, other, *extra, alpha=ALPHA):
    out = tmp_path / "out"
    coefficient = ["--alpha", str(alpha)] if alpha is not None else []
    assert main(["merge", "--base", str(base), "--other", str(other), *coefficient, "--out", str(out),
                 "--quiet", "--force", *extra]) == 0
    return state_dict(out)


def expected(base: dict, other: dict, key: str) -> torch.Tensor:
    """Equation (1) in fp32, (1 − α)·base + α·other as torch.lerp rounds it (base + α·(other − base)), on the rows
    both have; rows the other model lacks stay the base's."""
    b, o = base[key].float(), other[key].float()
    rows = min(b.shape[0], o.shape[0]) if key.endswith(("embed_tokens.weight", "lm_head.weight")) else b.shape[0]
    out = b.clone()
    out[:rows] = torch.lerp(b[:rows], o[:rows], ALPHA)
    assert torch.allclose(out[:rows], lerp(b[:rows], o[:rows], ALPHA), atol=1e-6)  # the formula itself
    return out


@pytest.mark.parametrize("dtype", [None, "bfloat16", "float16", "float32"])
def test_merge_writes_the_asked_dtype_with_the_fp32_merge_cast(tiny, tmp_path, dtype, capsys):
    base, other = state_dict(tiny["cambrian"]), state_dict(tiny["yi_vl"])
    got = merge(tmp_path, tiny["cambrian"], tiny["yi_vl"], *(["--dtype", dtype] if dtype else []))
    want_dtype = getattr(torch, dtype) if dtype else torch.float32  # default: the base's (Cambrian: float32)
    assert set(got) == set(base) and {t.dtype for t in got.values()} == {want_dtype}
    lm = [k for k in base if LM_KEY.search(k)]
    assert len(lm) == 9 * LLAMA["num_hidden_layers"] + 3
    for k, t in got.items():
        want = expected(base, other, k) if k in lm else base[k]
        assert torch.equal(t, want.to(want_dtype)), k  # kept tensors: the base's, cast (mergekit's out_dtype)
    record = json.loads((tmp_path / "out" / "adamms_merge.json").read_text())
    assert record["dtype"] == (dtype or "as the base")


def test_bfloat16_base_to_float32_merges_in_float32(tiny, tmp_path):
    """A bf16 base written as float32: the values are the fp32 merge, not a bf16 lerp widened afterwards."""
    base, other = state_dict(tiny["yi_vl"]), state_dict(tiny["cambrian"])
    got = merge(tmp_path, tiny["yi_vl"], tiny["cambrian"], "--dtype", "float32")
    k = "model.layers.1.mlp.down_proj.weight"
    assert got[k].dtype == torch.float32 and torch.equal(got[k], expected(base, other, k))
    bf16 = torch.lerp(base[k], other[k].to(torch.bfloat16), ALPHA)
    assert not torch.equal(got[k], bf16.float())  # the two differ: the test tells them apart


def test_block_by_block_equals_whole_tensors(tiny, tmp_path, monkeypatch):
    """Small blocks (a few rows) over an other model with fewer vocabulary rows: rows 80..95 of embed_tokens and
    lm_head stay the base's, the block that straddles row 80 is split right, and θ0 is read by rows too."""
    import adamms_eval.merging.stream as stream
    args = ["--pretrained", str(tiny["yi"]), "--method", "task_arithmetic", "--param", "lambda=1"]
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    whole = merge(tmp_path / "a", tiny["cambrian"], tiny["yi_vl_small_vocab"], *args, "--dtype", "bfloat16", alpha=None)
    monkeypatch.setattr(stream, "ROW_BYTES", 7 * 64 * 4)  # 7 rows of 64 fp32 per block: 80 is not a block edge
    blocks = merge(tmp_path / "b", tiny["cambrian"], tiny["yi_vl_small_vocab"], *args, "--dtype", "bfloat16", alpha=None)
    assert set(whole) == set(blocks) and all(torch.equal(whole[k], blocks[k]) for k in whole)
    base, other, theta0 = (state_dict(tiny[n]) for n in ("cambrian", "yi_vl_small_vocab", "yi"))
    k = "lm_head.weight"
    tau = (base[k][:80].float() - theta0[k][:80].float()) + (other[k].float() - theta0[k][:80].float())
    assert torch.equal(blocks[k][80:], base[k][80:].to(torch.bfloat16))
    assert torch.equal(blocks[k][:80], (theta0[k][:80].float() + tau).to(torch.bfloat16))


def test_lazy_merge_addresses_the_tensors_the_file_merge_merges(tiny, tmp_path):
    """LazyMerge on a model holding Cambrian's tensors under its names (the authors' class is not installable here):
    it moves exactly the language-model tensors, to the values `adamms merge` writes."""
    from transformers import PretrainedConfig

    from adamms_eval import LazyMerge
    base = state_dict(tiny["cambrian"])
    model = torch.nn.Module()
    for key, t in base.items():
        *path, leaf = key.split(".")
        m = model
        for part in path:
            if not hasattr(m, part):
                m.add_module(part, torch.nn.Module())
            m = getattr(m, part)
        m.register_parameter(leaf, torch.nn.Parameter(t.clone(), requires_grad=False))
    model.config = PretrainedConfig(**CAMBRIAN)
    lazy = LazyMerge(model, tiny["yi_vl"], progress=False)
    assert set(lazy.paths) == {k for k in base if LM_KEY.search(k)}
    lazy.set(ALPHA)
    written = merge(tmp_path, tiny["cambrian"], tiny["yi_vl"])
    now = model.state_dict()
    assert all(torch.equal(now[k], written[k]) for k in base)
