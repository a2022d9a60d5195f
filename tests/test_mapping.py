"""Mapping and merging of heterogeneous pairs: every tensor of the output against its formula."""
import pytest
import torch
from helpers import lerp, state_dict

from adamms_eval.checkpoint import Checkpoint
from adamms_eval.errors import AdammsError
from adamms_eval.mapping import build_plan
from adamms_eval.merge import open_merger, write_merged

ALPHA = 0.3


def merge(zoo, tmp_path, base, other, alpha=ALPHA, method="linear", params=None, pretrained=None, name="out"):
    merger = open_merger(zoo[base], zoo[other], method, params, zoo[pretrained] if pretrained else None)
    lam = alpha if method == "linear" else 1.0
    return write_merged(merger, lam, tmp_path / name, progress=False)


def assert_formula(out, key, expected):
    got = out[key]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected.to(got.dtype), rtol=0, atol=1e-6, msg=key)


def lm_keys(prefix, layers=2, bias=False):
    names = [f"self_attn.{p}_proj.weight" for p in "qkvo"] + [f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")]
    names += ["input_layernorm.weight", "post_attention_layernorm.weight"]
    if bias:
        names += [f"self_attn.{p}_proj.bias" for p in "qkv"]
    return [(f"{prefix}layers.{i}.{n}", f"layers.{i}.{n}") for i in range(layers) for n in names]


def test_qwen2vl_from_llava_onevision(zoo, tmp_path):
    out = state_dict(merge(zoo, tmp_path, "qwen2_vl", "llava_ov_hf"))
    a, b = state_dict(zoo["qwen2_vl"]), state_dict(zoo["llava_ov_hf"])
    for key, slot in lm_keys("model.", bias=True):
        assert_formula(out, key, lerp(a[key], b["language_model.model." + slot], ALPHA))
    assert_formula(out, "model.norm.weight", lerp(a["model.norm.weight"], b["language_model.model.norm.weight"], ALPHA))
    for key in a:
        if key.startswith("visual."):  # vision tower and merger are the base's, bit for bit
            assert torch.equal(out[key], a[key]), key
    # vocabulary: ids 0..99 mean the same token in both tokenizers; 100, 101 differ; the rest is padding
    for key, other_key in (("model.embed_tokens.weight", "language_model.model.embed_tokens.weight"),
                           ("lm_head.weight", "language_model.lm_head.weight")):
        assert out[key].shape == a[key].shape  # the other's extra rows are dropped
        torch.testing.assert_close(out[key][:100], lerp(a[key][:100], b[other_key][:100], ALPHA), rtol=0, atol=1e-6)
        assert torch.equal(out[key][100:], a[key][100:])


def test_layouts_of_one_model_merge_identically(zoo, tmp_path):
    """Release vs transformers-5 layout of the base, llava-hf vs lmms-lab layout of the other."""
    from transformers import AutoModelForImageTextToText
    x = merge(zoo, tmp_path, "qwen2_vl", "llava_ov_hf", name="x")
    y = merge(zoo, tmp_path, "qwen2_vl_tf5", "llava_ov_orig", name="y")
    sx = AutoModelForImageTextToText.from_pretrained(x).state_dict()
    sy = AutoModelForImageTextToText.from_pretrained(y).state_dict()
    assert sx.keys() == sy.keys()
    # without a tokenizer beside llava_ov_orig the common prefix is merged, so rows 100..127 differ
    for k in sx:
        if "embed_tokens" in k or "lm_head" in k:
            assert torch.equal(sx[k][:100], sy[k][:100]), k
        else:
            assert torch.equal(sx[k], sy[k]), k


def test_cogvlm_from_llava_fused_qkv_and_duplicates(zoo, tmp_path):
    out = state_dict(merge(zoo, tmp_path, "cogvlm", "llava15_hf"))
    a, b = state_dict(zoo["cogvlm"]), state_dict(zoo["llava15_hf"])
    for i in range(2):
        lp = f"language_model.model.layers.{i}."
        qkv = torch.cat([b[lp + f"self_attn.{p}_proj.weight"] for p in "qkv"])
        for expert in ("language_expert", "vision_expert"):  # the vision expert is a copy: maps to LLaVA's original
            k = f"model.layers.{i}.self_attn.{expert}_query_key_value.weight"
            assert_formula(out, k, lerp(a[k], qkv, ALPHA))
            k = f"model.layers.{i}.self_attn.{expert}_dense.weight"
            assert_formula(out, k, lerp(a[k], b[lp + "self_attn.o_proj.weight"], ALPHA))
        for branch in ("language_mlp", "vision_mlp"):
            for p in ("gate", "up", "down"):
                k = f"model.layers.{i}.mlp.{branch}.{p}_proj.weight"
                assert_formula(out, k, lerp(a[k], b[lp + f"mlp.{p}_proj.weight"], ALPHA))
    for key in a:
        if key.startswith("model.vision."):
            assert torch.equal(out[key], a[key]), key
    # no tokenizer beside cogvlm: common prefix of 96 rows (CogVLM's vocabulary is the smaller)
    assert_formula(out, "lm_head.weight", lerp(a["lm_head.weight"], b["language_model.lm_head.weight"][:96], ALPHA))


def test_llava_from_cogvlm_splits_fused_qkv(zoo, tmp_path):
    out = state_dict(merge(zoo, tmp_path, "llava15_hf", "cogvlm"))
    a, b = state_dict(zoo["llava15_hf"]), state_dict(zoo["cogvlm"])
    qkv = b["model.layers.1.self_attn.language_expert_query_key_value.weight"]
    for j, p in enumerate("qkv"):
        k = f"language_model.model.layers.1.self_attn.{p}_proj.weight"
        assert_formula(out, k, lerp(a[k], qkv[64 * j: 64 * (j + 1)], ALPHA))
    k = "language_model.model.embed_tokens.weight"
    torch.testing.assert_close(out[k][:96], lerp(a[k][:96], b["model.embed_tokens.weight"], ALPHA), rtol=0, atol=1e-6)
    assert torch.equal(out[k][96:], a[k][96:])  # <image>, <pad> rows exist only in llava-hf


def test_mplug_owl2_multiway_both_map_to_text_original(zoo, tmp_path):
    out = state_dict(merge(zoo, tmp_path, "mplug_owl2", "llava15_orig"))
    a, b = state_dict(zoo["mplug_owl2"]), state_dict(zoo["llava15_orig"])
    for way in (0, 1):
        k = f"model.layers.0.self_attn.k_proj.multiway.{way}.weight"
        assert_formula(out, k, lerp(a[k], b["model.layers.0.self_attn.k_proj.weight"], ALPHA))
        k = f"model.layers.1.post_attention_layernorm.multiway.{way}.weight"
        assert_formula(out, k, lerp(a[k], b["model.layers.1.post_attention_layernorm.weight"], ALPHA))
    for key in a:
        if "vision_model" in key or "visual_abstractor" in key:
            assert torch.equal(out[key], a[key]), key


def test_other_mplug_gives_its_text_branch(zoo, tmp_path):
    out = state_dict(merge(zoo, tmp_path, "llava15_orig", "mplug_owl2"))
    a, b = state_dict(zoo["llava15_orig"]), state_dict(zoo["mplug_owl2"])
    k = "model.layers.1.self_attn.v_proj.weight"
    assert_formula(out, k, lerp(a[k], b["model.layers.1.self_attn.v_proj.multiway.0.weight"], ALPHA))
    assert torch.equal(out["model.mm_projector.0.weight"], a["model.mm_projector.0.weight"])


def test_alpha_zero_reproduces_base_bits(zoo, tmp_path):
    out = state_dict(merge(zoo, tmp_path, "cogvlm", "llava15_hf", alpha=0.0))
    base = state_dict(zoo["cogvlm"])
    assert out.keys() == base.keys()
    assert all(torch.equal(out[k], base[k]) for k in base)


def test_task_vector_method_through_mapping(zoo, tmp_path):
    out = state_dict(merge(zoo, tmp_path, "cogvlm", "llava15_hf", method="task_arithmetic",
                           params={"weight": 0.5}, pretrained="llama_lm"))
    a, b, t0 = state_dict(zoo["cogvlm"]), state_dict(zoo["llava15_hf"]), state_dict(zoo["llama_lm"])
    qkv0 = torch.cat([t0[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"])
    qkvb = torch.cat([b[f"language_model.model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"])
    k = "model.layers.0.self_attn.vision_expert_query_key_value.weight"
    assert_formula(out, k, qkv0 + 0.5 * (a[k] - qkv0) + 0.5 * (qkvb - qkv0))


def test_merged_checkpoints_load_and_generate(zoo, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    out = merge(zoo, tmp_path, "qwen2_vl", "llava_ov_hf")
    model = AutoModelForImageTextToText.from_pretrained(out)
    ref = state_dict(out)
    assert torch.equal(model.state_dict()["model.language_model.layers.0.mlp.up_proj.weight"],
                       ref["model.layers.0.mlp.up_proj.weight"])
    proc = AutoProcessor.from_pretrained(out)
    ids = proc.tokenizer("hello", return_tensors="pt").input_ids
    gen = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 3


def test_incompatible_pair_refused_before_reading_data(zoo, monkeypatch):
    def no_data(self, key):
        raise AssertionError("tensor data was read")
    monkeypatch.setattr(Checkpoint, "get", no_data)
    with pytest.raises(AdammsError, match="family qwen2 vs llama.*num_key_value_heads 2 vs 4"):
        build_plan(Checkpoint(zoo["qwen2_vl"]), Checkpoint(zoo["llava15_hf"]))
    plan = build_plan(Checkpoint(zoo["cogvlm"]), Checkpoint(zoo["llava15_hf"]))  # planning reads headers only
    assert len(plan.merged) == 27
