"""`adamms plan` on the paper's Table 6 pair at full size: Cambrian-34B <- Yi-VL-34B (θ0 Yi-34B), from their
config.json and weight index (tests/fixtures/released/, SOURCES.md: what is published, what reconstructed) as
header-only sparse files.

Expected counts come from the models' code, not from the adapters: a LLaMA decoder layer has 9 tensors, so each
34B language model has 60 x 9 + 3 = 543; Cambrian's connector (cambrian_arch.py / vision_sampler.py) is 4 main
projector + 4 x 6 per-tower projector + 3 + 9 sampler layers of 35 tensors + vision_query + image_newline = 450;
Yi-VL's CLIP ViT-H has 32 x 16 + 7 tensors and its projector 8."""
import json
import re

import pytest
from test_real_layouts import build, layouts

from adamms_eval.arch.adapters import detect
from adamms_eval.cli import main

NAMES = ["cambrian-34b", "yi-vl-34b", "yi-34b"]
LM_KEY = re.compile(r"^model\.(?:layers\.\d+\.|embed_tokens\.weight$|norm\.weight$)|^lm_head\.weight$")
# the connector of Cambrian, by module name in cambrian_arch.py
PROJECTOR_KEY = re.compile(r"^model\.(?:mm_projector|mm_projector_aux_\d+)\.|^model\.image_newline$")
AGGREGATOR_KEY = re.compile(r"^model\.(?:vision_sampler_\d+|vision_sampler_layers)\.|^model\.vision_query$")
SAMPLER_LAYER = 1 + 1 + 1 + 2 + 2 + 3 + 4 * 6 + 1  # pos_embed_3, proj_context, proj_in, proj_out x2, norm x2,
# q_proj (LN w/b + Linear), k/v_proj_i (LN w/b + Linear) for 4 towers, o_proj


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("table6")
    return {name: build(name, root) for name in NAMES}


def plan(capsys, released, base, other, pretrained=None):
    args = ["plan", "--base", str(released[base]), "--other", str(released[other]), "--json"]
    code = main(args + (["--pretrained", str(released[pretrained])] if pretrained else []))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_cambrian_key_list_is_what_its_code_builds():
    cfg, index = layouts.load("cambrian-34b")
    keys = list(index["weight_map"])
    lm = [k for k in keys if LM_KEY.search(k)]
    projector = [k for k in keys if PROJECTOR_KEY.search(k)]
    aggregator = [k for k in keys if AGGREGATOR_KEY.search(k)]
    assert len(lm) == 9 * cfg["num_hidden_layers"] + 3 == 543
    assert len(projector) == 4 + 6 * len(cfg["mm_vision_tower_aux_list"]) + 1 == 29
    assert len(aggregator) == SAMPLER_LAYER * (cfg["connector_depth"] + cfg["num_of_vision_sampler_layers"]) + 1 == 421
    assert len(keys) == len(lm) + len(projector) + len(aggregator) == 993
    assert not any("vision_tower" in k for k in keys)  # the towers load from their own hubs at run time
    shapes = layouts.shapes("cambrian-34b", cfg)
    # the aggregator layers inside the language model take its 7168-wide hidden state, the per-tower projectors
    # the towers' widths (SigLIP 1152, CLIP-L 1024, DINOv2-g 1536, ConvNeXt-XXL multi-stage 5760)
    assert shapes["model.vision_sampler_layers.8.layers.0.proj_in.weight"] == (1024, 7168 + 1024)
    assert shapes["model.vision_sampler_layers.0.layers.0.proj_out.linear_2.weight"] == (7168, 1024)
    assert [shapes[f"model.mm_projector_aux_{i}.0.weight"][1] for i in range(4)] == [1152, 1024, 1536, 5760]
    assert index["metadata"]["total_size"] == 4 * sum(_numel(s) for s in shapes.values())  # float32
    assert len(set(index["weight_map"].values())) == 32  # the 5 GB split of 139 GB


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


@pytest.mark.parametrize("pretrained", [None, "yi-34b"])
def test_cambrian_yi_vl_plan_merges_the_language_model_and_keeps_the_connector(released, pretrained, capsys):
    p = plan(capsys, released, "cambrian-34b", "yi-vl-34b", pretrained)
    cfg, index = layouts.load("cambrian-34b")
    keys = list(index["weight_map"])
    shapes = layouts.shapes("cambrian-34b", cfg)
    lm = [k for k in keys if LM_KEY.search(k)]
    assert (p["tensors"], p["merged"]) == (993, 543)
    groups = p["groups"]
    assert groups["projector"] == {"tensors": 29, "merged": 0, "vocab_aligned": 0,
                                   "kept": {"projector: no counterpart (base weights kept)": 29}}
    assert (groups["vision aggregator"]["tensors"], groups["vision aggregator"]["merged"]) == (421, 0)
    assert groups["language model layers"]["merged"] == 540
    assert p["merged_parameters"] == sum(_numel(shapes[k]) for k in lm)  # 64000 rows on all three: all merged
    assert "merged the common prefix of 64000 rows" in p["vocabulary"]
    assert p["warnings"] == []
    assert (p["base"]["architecture"], p["base"]["family"], p["other"]["architecture"]) == ("cambrian", "llama", "yi_vl")
    assert (p["pretrained"] or {}).get("architecture") == ("llama" if pretrained else None)


def test_yi_vl_as_base_keeps_its_tower_and_projector(released, capsys):
    p = plan(capsys, released, "yi-vl-34b", "cambrian-34b", "yi-34b")
    assert (p["tensors"], p["merged"]) == (543 + 519 + 8, 543)
    assert (p["groups"]["vision"]["tensors"], p["groups"]["vision"]["merged"]) == (519, 0)
    assert (p["groups"]["projector"]["tensors"], p["groups"]["projector"]["merged"]) == (8, 0)


def test_configs_that_omit_defaults_read_through_the_config_classes():
    """Cambrian's flat config is read by LlamaConfig (cambrian_llama is remote code); the llava-hf style Yi-VL
    conversion nests its text config under LlavaConfig, whose omitted fields take LlamaConfig's defaults."""
    from transformers import LlamaConfig
    cfg, _ = layouts.load("cambrian-34b")
    del cfg["num_key_value_heads"], cfg["intermediate_size"]
    shape = detect(cfg).lm_shape(cfg)
    d = LlamaConfig()
    assert (shape.family, shape.hidden_size, shape.num_hidden_layers, shape.num_key_value_heads,
            shape.intermediate_size, shape.vocab_size) == ("llama", 7168, 60, 56, d.intermediate_size, 64000)
    yi_hf = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "is_yi_vl_derived_model": True,
             "text_config": {"model_type": "llama", "hidden_size": 7168, "num_hidden_layers": 60,
                             "num_attention_heads": 56, "num_key_value_heads": 8, "vocab_size": 64000}}
    a = detect(yi_hf)
    shape = a.lm_shape(yi_hf)
    assert a.name == "yi_vl"
    assert (shape.hidden_size, shape.intermediate_size, shape.head_dim) == (7168, d.intermediate_size, 128)


@pytest.mark.parametrize("config,name", [
    ({"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", "mm_projector_type": "mlp2x_gelu_Norm"},
     "yi_vl"),
    ({"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", "mm_projector_type": "mlp2x_gelu"}, "llava"),
    ({"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava"}, "llava"),
    ({"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "is_yi_vl_derived_model": True},
     "yi_vl"),
    ({"architectures": ["CambrianLlamaForCausalLM"], "model_type": "cambrian_llama"}, "cambrian"),
    ({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "mm_projector_type": "mlp2x_gelu_Norm"}, "llama"),
])
def test_yi_vl_is_told_apart_from_llava_by_its_config(config, name):
    assert detect(config).name == name


def test_theta0_from_an_old_yi_snapshot_pairs_like_the_llama_one(released, tmp_path, capsys):
    """Yi-34B snapshots from before the Hub's Llama-compatible layout (YiForCausalLM, norms ln1 / ln2) give the same
    plan as the current LlamaForCausalLM one."""
    old = tmp_path / "yi-34b-old"
    old.mkdir()
    index = json.loads((released["yi-34b"] / "model.safetensors.index.json").read_text())
    from helpers import write_header_only_safetensors
    cfg, _ = layouts.load("yi-34b")
    shapes = layouts.shapes("yi-34b", cfg)
    rename = lambda k: k.replace(".input_layernorm.", ".ln1.").replace(".post_attention_layernorm.", ".ln2.")  # noqa
    files: dict = {}
    for k, f in index["weight_map"].items():
        files.setdefault(f, {})[rename(k)] = (shapes[k], "BF16")
    for f, tensors in files.items():
        write_header_only_safetensors(old / f, tensors)
    (old / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": index["metadata"], "weight_map": {rename(k): f for k, f in index["weight_map"].items()}}))
    (old / "config.json").write_text(json.dumps({**cfg, "architectures": ["YiForCausalLM"], "model_type": "Yi"}))
    released = {**released, "yi-34b-old": old}
    new, was = (plan(capsys, released, "cambrian-34b", "yi-vl-34b", t) for t in ("yi-34b", "yi-34b-old"))
    assert was["pretrained"]["architecture"] == "yi"
    assert {k: v for k, v in was.items() if k != "pretrained"} == {k: v for k, v in new.items() if k != "pretrained"}
