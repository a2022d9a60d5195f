"""`adamms plan` on today's heterogeneous pairs at full size: Qwen2.5-VL-7B <- InternVL3-8B (θ0 Qwen2.5-7B) and
Qwen3-VL-8B <- LLaVA-OneVision-1.5-8B (θ0 Qwen3-8B-Base), from their config.json and weight index
(tests/fixtures/released/, SOURCES.md says what is published and what reconstructed) as header-only sparse files.

Expected counts come from the models' code (key names: Qwen2.5 layers have 12 tensors, Qwen3 layers 11 with
q_norm / k_norm and no biases; projectors are Qwen's `visual.merger` and DeepStack mergers, InternVL's `mlp1`
and `multi_modal_projector`), not from the adapters."""
import json
import re

import pytest
from test_real_layouts import build, layouts

from adamms_eval.arch.adapters import detect
from adamms_eval.cli import main

LM_KEY = re.compile(r"^(?:model\.language_model\.|language_model\.model\.|model\.)"
                    r"(?:layers\.\d+\.|embed_tokens\.weight$|norm\.weight$)|^(?:language_model\.)?lm_head\.weight$")
PROJECTOR_KEY = re.compile(r"^(?:model\.)?visual\.(?:merger|deepstack_merger_list)\.|^mlp1\.|^multi_modal_projector\.")
PER_LAYER = {"qwen2": 12, "qwen3": 11}  # Qwen2.5: q, k, v + 3 biases, o, 3 MLP, 2 norms; Qwen3: no biases, q/k norms
FAMILY = {"qwen2.5-vl-7b-instruct": "qwen2", "internvl3-8b": "qwen2", "internvl3-8b-hf": "qwen2", "qwen2.5-7b": "qwen2",
          "qwen3-vl-8b-instruct": "qwen3", "llava-onevision-1.5-8b-instruct": "qwen3", "qwen3-8b-base": "qwen3"}
PAIRS = [  # (base, other, θ0): both directions of each pair, and both InternVL3 layouts
    ("qwen2.5-vl-7b-instruct", "internvl3-8b", "qwen2.5-7b"),
    ("qwen2.5-vl-7b-instruct", "internvl3-8b-hf", "qwen2.5-7b"),
    ("internvl3-8b", "qwen2.5-vl-7b-instruct", "qwen2.5-7b"),
    ("internvl3-8b-hf", "qwen2.5-vl-7b-instruct", "qwen2.5-7b"),
    ("qwen3-vl-8b-instruct", "llava-onevision-1.5-8b-instruct", "qwen3-8b-base"),
    ("llava-onevision-1.5-8b-instruct", "qwen3-vl-8b-instruct", "qwen3-8b-base"),
]
# Qwen2.5's tokenizer: 151643 byte-level BPE tokens, then these 22 (ids 151643-151664); InternVL3 adds 9 after them
QWEN25_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                   "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                   "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                   "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
INTERNVL_SPECIALS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("current")
    return {name: build(name, root) for name in FAMILY}


def text_cfg(cfg: dict) -> dict:
    return cfg.get("llm_config") or cfg.get("text_config") or cfg


def expected(base: str, others: list[str]) -> dict:
    cfg, index = layouts.load(base)
    keys, shapes = list(index["weight_map"]), layouts.shapes(base, cfg)
    lm = [k for k in keys if LM_KEY.search(k)]
    assert len(lm) == PER_LAYER[FAMILY[base]] * text_cfg(cfg)["num_hidden_layers"] + 3  # the model's code
    rows = min(text_cfg(c)["vocab_size"] for c in [cfg] + [layouts.load(o)[0] for o in others])
    params = 0
    for k in lm:
        n = rows if k.endswith(("embed_tokens.weight", "lm_head.weight")) else shapes[k][0]
        for d in shapes[k][1:]:
            n *= d
        params += n
    projector = sum(bool(PROJECTOR_KEY.search(k)) for k in keys)
    return {"tensors": len(keys), "merged": len(lm), "projector": projector,
            "vision": len(keys) - len(lm) - projector, "rows": rows, "params": params}


def plan(capsys, released, base, other, pretrained=None, extra=()):
    args = ["plan", "--base", str(released[base]), "--other", str(released[other]), "--json", *extra]
    code = main(args + (["--pretrained", str(released[pretrained])] if pretrained else []))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.mark.parametrize("base,other,theta0", PAIRS, ids=[f"{b}<-{o}" for b, o, _ in PAIRS])
def test_current_pairs_plan_on_released_layouts(released, base, other, theta0, capsys):
    for pretrained in (None, theta0):
        want = expected(base, [other] + ([pretrained] if pretrained else []))
        code, p, err = plan(capsys, released, base, other, pretrained)
        assert code == 0, err
        assert (p["tensors"], p["merged"]) == (want["tensors"], want["merged"])
        groups = p["groups"]
        assert groups["projector"] == {"tensors": want["projector"], "merged": 0, "vocab_aligned": 0,
                                       "kept": {"projector: no counterpart (base weights kept)": want["projector"]}}
        assert (groups["vision"]["tensors"], groups["vision"]["merged"]) == (want["vision"], 0)
        assert p["merged_parameters"] == want["params"]
        assert f"merged the common prefix of {want['rows']} rows" in p["vocabulary"]
        assert p["warnings"] == []
        assert p["pretrained"] is None if pretrained is None else p["pretrained"]["architecture"] in ("qwen2", "qwen3")


def test_deepstack_mergers_and_qk_norms_at_8b(released):
    """Qwen3-VL's three DeepStack mergers are projectors (kept); every layer's q_norm / k_norm is merged from
    LLaVA-OneVision-1.5's tensor of the same slot."""
    from adamms_eval.arch.checkpoint import Checkpoint
    from adamms_eval.arch.mapping import build_plan
    p = build_plan(Checkpoint(released["qwen3-vl-8b-instruct"]), Checkpoint(released["llava-onevision-1.5-8b-instruct"]),
                   Checkpoint(released["qwen3-8b-base"]))
    by_key = {e.key: e for e in p.entries}
    deepstack = [e for k, e in by_key.items() if ".deepstack_merger_list." in k]
    assert len(deepstack) == 18 and all(e.group == "projector" and not e.merged for e in deepstack)
    e = by_key["model.language_model.layers.35.self_attn.k_norm.weight"]
    assert e.merged and e.shape == (128,)
    assert [r.key for r in e.other] == ["model.layers.35.self_attn.k_norm.weight"]
    assert [r.key for r in e.pretrained] == ["model.layers.35.self_attn.k_norm.weight"]


@pytest.mark.parametrize("base,other,theta0,needle", [
    ("qwen2.5-vl-7b-instruct", "llava-onevision-1.5-8b-instruct", None,
     "family qwen2 vs qwen3; hidden_size 3584 vs 4096; num_hidden_layers 28 vs 36"),
    ("qwen3-vl-8b-instruct", "internvl3-8b", None, "family qwen3 vs qwen2"),
    ("qwen3-vl-8b-instruct", "llava-onevision-1.5-8b-instruct", "qwen2.5-7b", "(pretrained, qwen2)"),
    ("qwen2.5-vl-7b-instruct", "internvl3-8b", "qwen3-8b-base", "(pretrained, qwen3)"),
])
def test_pairs_without_a_shared_language_model_are_refused(released, base, other, theta0, needle, capsys):
    code, _, err = plan(capsys, released, base, other, theta0)
    assert code == 2 and needle in err and "language models differ" in err and err.count("\n") == 1, err


def _tokenizer(folder, specials: list[str]) -> None:
    """A tokenizer.json whose ids 0..151642 are the same stand-in strings for every Qwen model and whose specials
    follow at their real ids (what the alignment compares: the string at each id)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    vocab = {f"t{i}": i for i in range(151643)} | {s: 151643 + i for i, s in enumerate(specials)}
    Tokenizer(WordLevel(vocab, unk_token="<|endoftext|>")).save(str(folder / "tokenizer.json"))


def test_internvl3_special_rows_align_by_token_string(released, tmp_path, capsys):
    """Without tokenizers the common prefix (151674 rows) pairs InternVL3's 9 added tokens with Qwen2.5-VL's padding
    rows; with both tokenizers only the 151665 tokens they share are merged."""
    import shutil
    pair = {}
    for name, specials in (("qwen2.5-vl-7b-instruct", QWEN25_SPECIALS),
                           ("internvl3-8b", QWEN25_SPECIALS + INTERNVL_SPECIALS)):
        pair[name] = tmp_path / name
        pair[name].mkdir()
        for f in released[name].iterdir():  # links: the sparse shards stay sparse
            (pair[name] / f.name).symlink_to(f)
        _tokenizer(pair[name], specials)
    code, p, err = plan(capsys, pair, "qwen2.5-vl-7b-instruct", "internvl3-8b")
    assert code == 0, err
    assert p["vocabulary"].startswith("tokenizers compared: 151665 of 151674 common rows merged")
    assert "9 untrained/padding rows kept" in p["vocabulary"]
    want = expected("qwen2.5-vl-7b-instruct", ["internvl3-8b"])
    assert p["merged_parameters"] == want["params"] - 2 * 9 * 3584  # 9 rows fewer in embed_tokens and lm_head
    shutil.rmtree(tmp_path)


def test_wrapper_configs_transformers_does_not_know_read_through_the_text_class():
    """internvl_chat / llavaonevision1_5 are remote-code wrapper types: their nested text config is read by the LM's
    own config class, so a field the file omits takes that class's default."""
    from transformers import Qwen2Config, Qwen3Config
    cfg, _ = layouts.load("internvl3-8b")
    shape = detect(cfg).lm_shape(cfg)
    want = Qwen2Config.from_dict(cfg["llm_config"])
    assert (shape.family, shape.hidden_size, shape.num_hidden_layers, shape.num_key_value_heads, shape.vocab_size) == \
        ("qwen2", want.hidden_size, want.num_hidden_layers, want.num_key_value_heads, 151674)
    cfg, _ = layouts.load("llava-onevision-1.5-8b-instruct")
    assert cfg["text_config"]["model_type"] == "LLaVAOneVision1_5_text"
    del cfg["text_config"]["intermediate_size"]
    shape = detect(cfg).lm_shape(cfg)
    assert (shape.family, shape.head_dim, shape.intermediate_size) == ("qwen3", 128, Qwen3Config().intermediate_size)
