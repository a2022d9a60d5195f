"""`adamms plan` on the real 7B layouts (Qwen2-VL-7B release layout <- LLaVA-OneVision-7B hf port).

The checkpoints are header-only safetensors with the real key names and shapes (the data is a sparse
hole), built from the transformers classes on the meta device: planning reads headers only.
"""
import json
import re

import torch
from helpers import write_header_only_safetensors

from adamms_eval.cli import main

QWEN2_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4)
RELEASE_QWEN2_VL = [(r"^model\.language_model\.", "model."), (r"^model\.visual\.", "visual.")]
HF_PORT_LLAVA = [(r"^model\.language_model\.", "language_model.model."), (r"^lm_head\.", "language_model.lm_head."),
                 (r"^model\.vision_tower\.", "vision_tower.vision_model."), (r"^model\.", "")]


def save_layout(model, config, renames, out):
    out.mkdir()
    shapes = {}
    for key, t in model.state_dict().items():
        for pattern, repl in renames:
            key, n = re.subn(pattern, repl, key)
            if n:
                break
        shapes[key] = (tuple(t.shape), "BF16")
    write_header_only_safetensors(out / "model.safetensors", shapes)
    (out / "config.json").write_text(config.to_json_string())
    return sum(t.numel() for t in model.state_dict().values())


def test_plan_on_real_7b_layouts(tmp_path, capsys):
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2VLConfig,
                              Qwen2VLForConditionalGeneration)
    qcfg = Qwen2VLConfig(text_config=QWEN2_7B)
    ocfg = LlavaOnevisionConfig(text_config=dict(model_type="qwen2", **{**QWEN2_7B, "vocab_size": 152128}),
                                vision_config=dict(model_type="siglip_vision_model", hidden_size=1152,
                                                   intermediate_size=4304, num_hidden_layers=26,
                                                   num_attention_heads=16, image_size=384, patch_size=14))
    with torch.device("meta"):
        qwen, ov = Qwen2VLForConditionalGeneration(qcfg), LlavaOnevisionForConditionalGeneration(ocfg)
    visual = sum(p.numel() for n, p in qwen.named_parameters() if n.startswith("model.visual."))
    total = save_layout(qwen, qcfg, RELEASE_QWEN2_VL, tmp_path / "qwen2-vl-7b")
    save_layout(ov, ocfg, HF_PORT_LLAVA, tmp_path / "llava-ov-7b")
    assert (tmp_path / "qwen2-vl-7b" / "model.safetensors").stat().st_size > 16e9  # real size, sparse on disk

    code = main(["plan", "--base", str(tmp_path / "qwen2-vl-7b"), "--other", str(tmp_path / "llava-ov-7b"), "--json"])
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["merged"] == 28 * 12 + 3  # q/k/v (+bias), o, gate/up/down, 2 norms per layer; embed, norm, lm_head
    assert plan["merged_parameters"] == total - visual  # the whole LM incl. all 152064 embedding/lm_head rows
    assert plan["groups"]["vision"]["merged"] == 0 and plan["groups"]["projector"]["merged"] == 0
    assert "common prefix of 152064 rows (base 152064, other 152128 rows)" in plan["vocabulary"]
