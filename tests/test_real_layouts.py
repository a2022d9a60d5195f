"""`adamms plan` on the released 7B checkpoints, built from their published config.json and weight index.

tests/fixtures/released/<name>/ holds each checkpoint's config.json and weight index (SOURCES.md there says
which files are the published ones and which are reconstructed, from what evidence). Here every checkpoint
becomes header-only sparse safetensors at full size (real key names and shapes, the data a hole), with the
index's shard split; checkpoints published as `pytorch_model-*.bin` are written as safetensors shards of the
same split (planning reads headers only, which a .bin cannot offer without its data). Expected counts come
from the architecture (the key names of the language model and the paper's mapping), not from the program.
"""
import json
import re
import sys
from pathlib import Path

import pytest
from helpers import write_header_only_safetensors

from adamms_eval.arch.adapters import detect
from adamms_eval.arch.checkpoint import Checkpoint
from adamms_eval.cli import main
from adamms_eval.arch.mapping import build_plan

FIXTURES = Path(__file__).parent / "fixtures" / "released"
sys.path.insert(0, str(FIXTURES))
import layouts  # key lists and shapes from a config.json (tests/fixtures/released/layouts.py)

# language-model tensors by name, independent of the adapters: decoder layers, embeddings, final norm, lm_head
LM_PREFIX = r"^(?:model\.|language_model\.model\.)"
LM_KEY = re.compile(LM_PREFIX + r"(?:layers\.\d+\.(?!self_attn\.rotary_emb\.)|embed_tokens\.weight$|norm\.weight$)"
                    r"|^(?:language_model\.)?lm_head\.weight$")
BUFFER_KEY = re.compile(LM_PREFIX + r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")
# per decoder layer: (LM tensors, of which duplicated multimodal copies) -- from each model's code
PER_LAYER = {"qwen2": (12, 0),            # q, k, v (+3 biases), o, gate, up, down, 2 norms
             "llama": (9, 0),             # q, k, v, o, gate, up, down, 2 norms
             "cogvlm": (12, 5),           # language/vision expert: fused qkv, dense, 3 MLP each; 2 shared norms
             "mplug_owl2": (13, 4)}       # shared q, o, 3 MLP (5); k, v, input/post norms x multiway.{0,1} (8)
FAMILY = {"qwen2-vl-7b-instruct": "qwen2", "llava-onevision-qwen2-7b-ov-hf": "qwen2",
          "llava-onevision-qwen2-7b-ov": "qwen2", "qwen2-7b-instruct": "qwen2", "llava-1.5-7b-hf": "llama",
          "llava-v1.5-7b": "llama", "sharegpt4v-7b": "llama", "llama-2-7b-hf": "llama", "vicuna-7b-v1.5": "llama",
          "cogvlm-chat-hf": "cogvlm", "mplug-owl2-llama2-7b": "mplug_owl2"}

PAIRS = [  # (base, other, θ0): Table 1 (both LLaVA-OV layouts), Table 2 (both LLaVA-1.5 layouts), Tables 10-13,
    # and the ShareGPT4V pairs among the LLaMA-2 models of Appendix A
    ("qwen2-vl-7b-instruct", "llava-onevision-qwen2-7b-ov-hf", "qwen2-7b-instruct"),
    ("qwen2-vl-7b-instruct", "llava-onevision-qwen2-7b-ov", "qwen2-7b-instruct"),
    ("cogvlm-chat-hf", "llava-1.5-7b-hf", "vicuna-7b-v1.5"),
    ("cogvlm-chat-hf", "llava-v1.5-7b", "vicuna-7b-v1.5"),
    ("llava-v1.5-7b", "mplug-owl2-llama2-7b", "llama-2-7b-hf"),
    ("llava-1.5-7b-hf", "mplug-owl2-llama2-7b", "llama-2-7b-hf"),
    ("mplug-owl2-llama2-7b", "llava-v1.5-7b", "llama-2-7b-hf"),
    ("mplug-owl2-llama2-7b", "llava-1.5-7b-hf", "llama-2-7b-hf"),
    ("mplug-owl2-llama2-7b", "cogvlm-chat-hf", "llama-2-7b-hf"),
    ("cogvlm-chat-hf", "mplug-owl2-llama2-7b", "llama-2-7b-hf"),
    ("cogvlm-chat-hf", "sharegpt4v-7b", "vicuna-7b-v1.5"),
    ("sharegpt4v-7b", "llava-v1.5-7b", "vicuna-7b-v1.5"),
    ("llava-1.5-7b-hf", "sharegpt4v-7b", "vicuna-7b-v1.5"),
]


def build(name: str, root: Path) -> Path:
    """Header-only sparse safetensors of a released checkpoint, split as its published index."""
    cfg, index = layouts.load(name)
    shapes = layouts.shapes(name, cfg)
    assert set(shapes) == set(index["weight_map"]), f"{name}: index and config describe different tensors"
    out = root / name
    out.mkdir()
    files: dict[str, dict] = {}
    weight_map = {}
    for key, file in index["weight_map"].items():
        if file.endswith(".bin"):  # .bin shards: the same split, written as safetensors headers
            file = file.removesuffix(".bin") + ".safetensors"
        files.setdefault(file, {})[key] = (shapes[key], layouts.dtype_of(key, cfg))
        weight_map[key] = file
    for file, tensors in files.items():
        write_header_only_safetensors(out / file, tensors)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": index["metadata"],
                                                                  "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    return {name: build(name, root) for name in FAMILY}


def lm_rows(cfg: dict) -> int:
    return (cfg.get("text_config") or cfg)["vocab_size"]


def expected(base: str, others: list[str]) -> dict:
    """Merged / kept counts of `base` <- others, from the architecture: every language-model tensor of the base
    has a counterpart in any model of the same family (a duplicated copy falls back to the shared/text weight),
    vision / projector tensors and buffers are kept; embedding rows are the common vocabulary prefix."""
    cfg, index = layouts.load(base)
    keys = list(index["weight_map"])
    shapes = layouts.shapes(base, cfg)
    lm = [k for k in keys if LM_KEY.search(k)]
    layers = (cfg.get("text_config") or cfg).get("num_hidden_layers", 32)
    per_layer, copies = PER_LAYER[FAMILY[base]]
    assert len(lm) == per_layer * layers + 3  # the key list agrees with the model's code
    rows = min([lm_rows(cfg)] + [lm_rows(layouts.load(o)[0]) for o in others])
    params = 0
    for k in lm:
        n = 1
        for d in shapes[k][1:]:
            n *= d
        params += n * (rows if k.endswith(("embed_tokens.weight", "lm_head.weight")) else shapes[k][0])
    return {"tensors": len(keys), "merged": len(lm), "copies": copies * layers, "rows": rows, "params": params,
            "buffers": sum(bool(BUFFER_KEY.search(k)) for k in keys)}


@pytest.mark.parametrize("base,other,theta0", PAIRS, ids=[f"{b}<-{o}" for b, o, _ in PAIRS])
def test_paper_pairs_plan_on_released_layouts(released, base, other, theta0, capsys):
    want = expected(base, [other, theta0])
    for pretrained in (None, theta0):
        args = ["plan", "--base", str(released[base]), "--other", str(released[other]), "--json"]
        assert main(args + (["--pretrained", str(released[pretrained])] if pretrained else [])) == 0
        plan = json.loads(capsys.readouterr().out)
        assert plan["tensors"] == want["tensors"]
        assert plan["merged"] == want["merged"]
        groups = plan["groups"]
        assert groups.get("duplicated multimodal copies", {"merged": 0})["merged"] == want["copies"]
        assert groups.get("ignored buffers (rotary inv_freq)", {"tensors": 0})["tensors"] == want["buffers"]
        assert all(g["merged"] == 0 for name, g in groups.items()
                   if name in ("vision", "projector", "abstractor", "ignored buffers (rotary inv_freq)"))
        if pretrained:  # the merged parameter count depends on θ0's vocabulary too
            assert plan["merged_parameters"] == want["params"]
        assert f"common prefix of {want['rows'] if pretrained else min(want['rows'], expected(base, [other])['rows'])}"\
               in plan["vocabulary"]
        assert plan["warnings"] == []


def test_llava_hf_config_without_text_fields_reads_as_transformers_does():
    """llava-hf/llava-1.5-7b-hf's text_config omits every LlamaConfig default: they come from LlamaConfig."""
    from transformers import LlamaConfig
    cfg, _ = layouts.load("llava-1.5-7b-hf")
    assert not {"hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size"} & set(cfg["text_config"])
    shape = detect(cfg).lm_shape(cfg)
    d = LlamaConfig()
    assert (shape.hidden_size, shape.num_attention_heads, shape.num_hidden_layers, shape.intermediate_size,
            shape.num_key_value_heads, shape.vocab_size) == (d.hidden_size, d.num_attention_heads,
                                                            d.num_hidden_layers, d.intermediate_size,
                                                            d.num_attention_heads, 32064)


def test_cogvlm_mplug_vision_copies_map_branch_to_branch_at_7b(released):
    """Appendix B on the released layouts: CogVLM's vision-expert QKV takes mPLUG's shared q_proj and its
    multiway.1 k/v; mPLUG's multiway.1 k takes the k row block of CogVLM's vision-expert QKV."""
    plan = build_plan(Checkpoint(released["cogvlm-chat-hf"]), Checkpoint(released["mplug-owl2-llama2-7b"]))
    e = next(e for e in plan.entries if e.key == "model.layers.7.self_attn.vision_expert_query_key_value.weight")
    assert [r.key for r in e.other] == ["model.layers.7.self_attn.q_proj.weight",
                                        "model.layers.7.self_attn.k_proj.multiway.1.weight",
                                        "model.layers.7.self_attn.v_proj.multiway.1.weight"]
    plan = build_plan(Checkpoint(released["mplug-owl2-llama2-7b"]), Checkpoint(released["cogvlm-chat-hf"]))
    e = next(e for e in plan.entries if e.key == "model.layers.7.self_attn.k_proj.multiway.1.weight")
    assert (e.other[0].key, e.other[0].part) == ("model.layers.7.self_attn.vision_expert_query_key_value.weight", 1)
    e = next(e for e in plan.entries if e.key == "model.layers.7.input_layernorm.multiway.1.weight")
    assert e.other[0].key == "model.layers.7.input_layernorm.weight"


def test_released_checkpoints_are_real_size(released):
    assert (released["cogvlm-chat-hf"] / "model-00001-of-00008.safetensors").stat().st_size > 4.9e9
    total = sum(f.stat().st_size for f in released["llava-v1.5-7b"].glob("*.safetensors"))
    assert total > json.loads((FIXTURES / "llava-v1.5-7b" / "pytorch_model.bin.index.json").read_text()
                              )["metadata"]["total_size"]
