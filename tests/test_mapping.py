"""Mapping and merging of heterogeneous pairs: every tensor of the output against its formula."""
import pytest
import torch
from helpers import lerp, state_dict

from adamms_eval.arch.checkpoint import Checkpoint
from adamms_eval.errors import AdammsError
from adamms_eval.arch.mapping import build_plan
from adamms_eval.merging.merger import open_merger, write_merged

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


# ---- CogVLM <-> mPLUG-Owl2 (Tables 12, 13): a duplicated copy takes the other's copy of the same modality ----

def _cog_rows(qkv, j, n=64):
    return qkv[n * j: n * (j + 1)]


def test_cogvlm_from_mplug_owl2_vision_expert_takes_multiway1(zoo, tmp_path):
    """Appendix B, CogVLM base: vision-expert q <- mPLUG's shared q_proj, k/v <- multiway.1 k/v,
    vision dense <- shared o_proj, vision MLP <- shared MLP; the language expert takes multiway.0."""
    out = state_dict(merge(zoo, tmp_path, "cogvlm", "mplug_owl2"))
    a, b = state_dict(zoo["cogvlm"]), state_dict(zoo["mplug_owl2"])
    for i in range(2):
        p, m = f"model.layers.{i}.", f"model.layers.{i}."
        for expert, way in (("vision_expert", 1), ("language_expert", 0)):
            k = f"{p}self_attn.{expert}_query_key_value.weight"
            parts = [b[m + "self_attn.q_proj.weight"], b[m + f"self_attn.k_proj.multiway.{way}.weight"],
                     b[m + f"self_attn.v_proj.multiway.{way}.weight"]]
            for j, part in enumerate(parts):  # slot by slot: the q, k, v row blocks of the fused tensor
                torch.testing.assert_close(_cog_rows(out[k], j), lerp(_cog_rows(a[k], j), part, ALPHA),
                                           rtol=0, atol=1e-6, msg=f"{k} block {j}")
            k = f"{p}self_attn.{expert}_dense.weight"
            assert_formula(out, k, lerp(a[k], b[m + "self_attn.o_proj.weight"], ALPHA))
        for branch in ("vision_mlp", "language_mlp"):
            for x in ("gate", "up", "down"):
                k = f"{p}mlp.{branch}.{x}_proj.weight"
                assert_formula(out, k, lerp(a[k], b[m + f"mlp.{x}_proj.weight"], ALPHA))
        for x in ("input_layernorm", "post_attention_layernorm"):  # CogVLM's shared norms <- the text branch
            assert_formula(out, f"{p}{x}.weight", lerp(a[f"{p}{x}.weight"], b[f"{m}{x}.multiway.0.weight"], ALPHA))
    # the vision copy really differs from the text copy in mPLUG, so the test tells the two mappings apart
    assert not torch.equal(b["model.layers.0.self_attn.k_proj.multiway.1.weight"],
                           b["model.layers.0.self_attn.k_proj.multiway.0.weight"])


def test_mplug_owl2_from_cogvlm_multiway1_takes_vision_expert(zoo, tmp_path):
    """Appendix B, mPLUG-Owl2 base: multiway.1 k/v <- CogVLM vision-expert QKV's k and v row blocks,
    multiway.1 norms <- CogVLM's shared norms; shared q/o/MLP and multiway.0 <- the language expert."""
    out = state_dict(merge(zoo, tmp_path, "mplug_owl2", "cogvlm"))
    a, b = state_dict(zoo["mplug_owl2"]), state_dict(zoo["cogvlm"])
    for i in range(2):
        p = f"model.layers.{i}."
        vis, lang = b[p + "self_attn.vision_expert_query_key_value.weight"], \
            b[p + "self_attn.language_expert_query_key_value.weight"]
        for j, x in ((1, "k"), (2, "v")):
            k = f"{p}self_attn.{x}_proj.multiway.1.weight"
            assert_formula(out, k, lerp(a[k], _cog_rows(vis, j), ALPHA))
            k = f"{p}self_attn.{x}_proj.multiway.0.weight"
            assert_formula(out, k, lerp(a[k], _cog_rows(lang, j), ALPHA))
        k = p + "self_attn.q_proj.weight"
        assert_formula(out, k, lerp(a[k], _cog_rows(lang, 0), ALPHA))
        k = p + "self_attn.o_proj.weight"
        assert_formula(out, k, lerp(a[k], b[p + "self_attn.language_expert_dense.weight"], ALPHA))
        for x in ("gate", "up", "down"):
            k = f"{p}mlp.{x}_proj.weight"
            assert_formula(out, k, lerp(a[k], b[f"{p}mlp.language_mlp.{x}_proj.weight"], ALPHA))
        for x in ("input_layernorm", "post_attention_layernorm"):
            for way in (0, 1):
                k = f"{p}{x}.multiway.{way}.weight"
                assert_formula(out, k, lerp(a[k], b[f"{p}{x}.weight"], ALPHA))
    assert not torch.equal(_cog_rows(b["model.layers.0.self_attn.vision_expert_query_key_value.weight"], 1),
                           _cog_rows(b["model.layers.0.self_attn.language_expert_query_key_value.weight"], 1))


def test_duplicate_copies_keep_their_canonical_names(zoo):
    """DARE seeds its masks with canonical_name: matching by modality must not change the names."""
    plan = build_plan(Checkpoint(zoo["cogvlm"]), Checkpoint(zoo["mplug_owl2"]))
    names = {e.key: e.canonical_name for e in plan.entries}
    assert names["model.layers.1.self_attn.vision_expert_query_key_value.weight"] == \
        "vision_expert:layers.1.self_attn.q_proj.weight+layers.1.self_attn.k_proj.weight+layers.1.self_attn.v_proj.weight"
    assert names["model.layers.0.mlp.vision_mlp.up_proj.weight"] == "vision_expert:layers.0.mlp.up_proj.weight"
    plan = build_plan(Checkpoint(zoo["mplug_owl2"]), Checkpoint(zoo["cogvlm"]))
    names = {e.key: e.canonical_name for e in plan.entries}
    assert names["model.layers.0.self_attn.k_proj.multiway.1.weight"] == "multiway_vision:layers.0.self_attn.k_proj.weight"
    assert names["model.layers.0.self_attn.k_proj.multiway.0.weight"] == "layers.0.self_attn.k_proj.weight"


# ---- buffers saved by old transformers, tied-embedding other models ----

def _with_inv_freq(src, dst):
    """A copy of a tiny .bin checkpoint with `rotary_emb.inv_freq` buffers, as transformers <= 4.31 saved them."""
    import json
    import shutil
    shutil.copytree(src, dst)
    index = json.loads((dst / "pytorch_model.bin.index.json").read_text())
    shard = dst / "pytorch_model-00001-of-00002.bin"
    sd = torch.load(shard, weights_only=True)
    for i in range(2):
        key = f"model.layers.{i}.self_attn.rotary_emb.inv_freq"
        sd[key] = 1.0 / (10000 ** (torch.arange(0, 16, 2).float() / 16)) + i  # distinct per layer
        index["weight_map"][key] = shard.name
    torch.save(sd, shard)
    (dst / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return dst


def test_rotary_buffers_are_listed_not_merged_and_copied(zoo, tmp_path, capsys):
    from adamms_eval.cli import main
    base = _with_inv_freq(zoo["llava15_orig"], tmp_path / "llava_old")
    other = tmp_path / "mplug"
    import shutil
    shutil.copytree(zoo["mplug_owl2"], other)
    sd = torch.load(other / "pytorch_model.bin", weights_only=True)
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    torch.save(sd, other / "pytorch_model.bin")
    assert main(["plan", "--base", str(base), "--other", str(other), "--json"]) == 0
    import json
    plan = json.loads(capsys.readouterr().out)
    g = plan["groups"]["ignored buffers (rotary inv_freq)"]
    assert g["tensors"] == 2 and g["merged"] == 0
    merger = open_merger(base, other, "linear", None)
    out = state_dict(write_merged(merger, ALPHA, tmp_path / "out", progress=False))
    a = state_dict(base)
    for i in range(2):
        key = f"model.layers.{i}.self_attn.rotary_emb.inv_freq"
        assert torch.equal(out[key], a[key])  # the base's copy, bit for bit
    k = "model.layers.1.self_attn.k_proj.weight"  # everything else merges as before
    assert_formula(out, k, lerp(a[k], sd["model.layers.1.self_attn.k_proj.multiway.0.weight"], ALPHA))


def test_lazy_merge_ignores_buffers_of_the_other(zoo, tmp_path):
    from transformers import AutoModelForImageTextToText

    from adamms_eval import LazyMerge
    other = _with_inv_freq(zoo["llava15_orig"], tmp_path / "llava_old")
    model = AutoModelForImageTextToText.from_pretrained(zoo["llava15_hf"])
    lazy = LazyMerge(model, other=other, method="linear", progress=False)
    assert not any("inv_freq" in e.key for e in lazy.plan.merged)
    lazy.set(ALPHA)
    ref = state_dict(write_merged(open_merger(zoo["llava15_hf"], other), ALPHA, tmp_path / "ref", progress=False))
    got = model.state_dict()["model.language_model.layers.1.self_attn.v_proj.weight"]
    assert torch.equal(got, ref["language_model.model.layers.1.self_attn.v_proj.weight"].to(got.dtype))


def test_tied_other_warns_that_lm_head_stays(zoo, tmp_path, capsys):
    import json
    import shutil

    from safetensors.torch import save_file

    from adamms_eval.cli import main
    tied = tmp_path / "llama_tied"
    shutil.copytree(zoo["llama_lm"], tied)
    sd = state_dict(tied)
    del sd["lm_head.weight"]
    save_file(sd, tied / "model.safetensors")
    cfg = json.loads((tied / "config.json").read_text())
    (tied / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": True}))

    plan = build_plan(Checkpoint(zoo["llava15_orig"]), Checkpoint(tied)).summary()
    assert plan["groups"]["lm_head"]["merged"] == 0
    assert len(plan["warnings"]) == 1 and "lm_head.weight is NOT merged" in plan["warnings"][0]
    assert build_plan(Checkpoint(zoo["llava15_orig"]), Checkpoint(zoo["llama_lm"])).summary()["warnings"] == []
    assert main(["plan", "--base", str(zoo["llava15_orig"]), "--other", str(tied)]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: the other model (llama) has no lm_head tensor (tie_word_embeddings)" in printed
