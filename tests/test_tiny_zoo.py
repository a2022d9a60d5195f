"""The tiny checkpoint zoo: real key layouts, one shared θ0 per family, loadable and runnable offline."""
import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from adamms_eval.testing.tiny import NAMES, NOISE, build_zoo

# notes/checkpoint-layouts.md section 3: original LLaVA / lmms-lab layout -> llava-hf layout
ORIG_KEY_MAPPING = {r"^model\.mm_projector\.0": "multi_modal_projector.linear_1",
                    r"^model\.mm_projector\.2": "multi_modal_projector.linear_2",
                    r"^model\.vision_tower\.vision_tower\.vision_model": "vision_tower.vision_model",
                    r"^model\.image_newline": "image_newline",
                    r"^model\.(?!vision_tower|mm_projector|image_newline)": "language_model.model.",
                    r"^lm_head": "language_model.lm_head"}
HF_MLLMS = {"qwen2_vl": 56, "qwen2_vl_tf5": 56, "llava_ov_hf": 28, "llava15_hf": 28, "qwen2_5_vl": 56,
            "qwen2_5_vl_tf5": 56, "qwen3_vl": 64, "internvl_hf": 56}  # name -> image side


def tensors(path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    for f in sorted(path.glob("*.bin")):
        out.update(torch.load(f, weights_only=True))
    return out


def tops(sd, depth=2) -> set[str]:
    return {".".join(k.split(".")[:depth]) for k in sd}


def test_every_checkpoint_is_written_in_its_real_layout(zoo):
    assert set(zoo) == set(NAMES)
    sd = {name: tensors(path) for name, path in zoo.items()}
    assert tops(sd["qwen2_vl"], 1) == {"model", "visual", "lm_head"}
    assert "model.layers.0.self_attn.q_proj.bias" in sd["qwen2_vl"]  # Qwen2's qkv bias
    assert tops(sd["qwen2_vl_tf5"]) == {"model.language_model", "model.visual", "lm_head.weight"}
    assert tops(sd["llava_ov_hf"]) == {"language_model.model", "language_model.lm_head", "vision_tower.vision_model",
                                       "multi_modal_projector.linear_1", "multi_modal_projector.linear_2",
                                       "image_newline"}
    assert {k for k in sd["llava_ov_orig"] if not k.startswith("model.layers.")} >= {
        "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "model.image_newline",
        "model.mm_projector.0.weight", "model.mm_projector.2.bias",
        "model.vision_tower.vision_tower.vision_model.post_layernorm.weight"}
    assert "vision_tower.vision_model.embeddings.patch_embedding.weight" in sd["llava15_hf"]
    assert not any("vision_tower" in k for k in sd["llava15_orig"])  # released without CLIP
    assert sorted(p.name for p in zoo["llava15_orig"].iterdir()) == [
        "config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json"]
    index = json.loads((zoo["llava15_orig"] / "pytorch_model.bin.index.json").read_text())
    assert set(index["weight_map"]) == set(sd["llava15_orig"])
    assert "model.layers.1.self_attn.language_expert_query_key_value.weight" in sd["cogvlm"]
    assert "model.vision.transformer.layers.0.attention.query_key_value.weight" in sd["cogvlm"]
    assert "model.layers.1.self_attn.v_proj.multiway.1.weight" in sd["mplug_owl2"]
    assert "model.visual_abstractor.encoder.layers.0.crossattention.attention.query.weight" in sd["mplug_owl2"]
    configs = {name: json.loads((path / "config.json").read_text()) for name, path in zoo.items()}
    assert configs["llava_ov_orig"]["architectures"] == ["LlavaQwenForCausalLM"]
    assert configs["llava15_orig"]["architectures"] == ["LlavaLlamaForCausalLM"]
    assert configs["cogvlm"]["model_type"] == "cogvlm" and configs["mplug_owl2"]["vocab_size"] == 96


def test_models_share_theta0_with_distinct_nonzero_task_vectors(zoo):
    q0, vl, ov = (tensors(zoo[n]) for n in ("qwen2_lm", "qwen2_vl", "llava_ov_orig"))
    k = "model.layers.1.mlp.down_proj.weight"
    tau_vl, tau_ov = vl[k] - q0[k], ov[k] - q0[k]
    assert abs(tau_vl.std().item() - NOISE) < 0.005 and abs(tau_ov.std().item() - NOISE) < 0.005
    assert not torch.allclose(tau_vl, tau_ov, atol=1e-3)
    assert not torch.allclose(q0["model.norm.weight"], torch.ones(64), atol=0.01)  # norms are not all ones
    emb = "model.embed_tokens.weight"
    assert vl[emb].shape == (128, 64) and ov[emb].shape == (192, 64) and q0[emb].shape == (128, 64)
    assert torch.equal(vl[emb][111:], q0[emb][111:])  # past Qwen2-VL's tokenizer: untrained padding
    assert not torch.equal(vl[emb][:111], q0[emb][:111])
    l0, hf, orig = (tensors(zoo[n]) for n in ("llama_lm", "llava15_hf", "llava15_orig"))
    assert hf["language_model.model.embed_tokens.weight"].shape == (128, 64) and orig[emb].shape == (96, 64)
    assert torch.equal(hf["language_model.model.embed_tokens.weight"][:96], orig[emb])
    assert not torch.equal(orig[emb], l0[emb])


def test_cogvlm_and_mplug_experts_derive_from_the_llama_theta0(zoo):
    l0, cog, owl = (tensors(zoo[n]) for n in ("llama_lm", "cogvlm", "mplug_owl2"))
    p = "model.layers.0.self_attn."
    qkv = cog[p + "language_expert_query_key_value.weight"]
    assert qkv.shape == (192, 64)
    tau = qkv - torch.cat([l0[f"{p}{x}_proj.weight"] for x in "qkv"])  # fused Q | K | V of θ0 + noise
    assert abs(tau.std().item() - NOISE) < 0.005
    assert abs((cog[p + "vision_expert_query_key_value.weight"] - qkv).std().item() - NOISE) < 0.005
    assert abs((owl[p + "k_proj.multiway.0.weight"] - l0[p + "k_proj.weight"]).std().item() - NOISE) < 0.005
    assert not torch.equal(owl[p + "k_proj.multiway.0.weight"], owl[p + "k_proj.multiway.1.weight"])
    assert not torch.equal(cog["model.embed_tokens.weight"], owl["model.embed_tokens.weight"])


def test_tokenizers_share_the_base_vocab_and_configs_point_at_their_own_specials(zoo):
    from transformers import AutoTokenizer

    toks = {n: AutoTokenizer.from_pretrained(zoo[n]) for n in ("qwen2_lm", "qwen2_vl", "llava_ov_hf",
                                                                 "llama_lm", "llava15_hf")}
    vocab = {n: t.convert_ids_to_tokens(list(range(len(t)))) for n, t in toks.items()}
    assert vocab["qwen2_lm"] == vocab["qwen2_vl"][:100] == vocab["llava_ov_hf"][:100]
    assert vocab["qwen2_lm"][97:] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert vocab["llama_lm"] == vocab["llava15_hf"][:96] and vocab["llava15_hf"][96:] == ["<image>", "<pad>"]
    text = "<|im_start|>user\nDescribe the image.<|im_end|>"
    assert toks["qwen2_lm"](text).input_ids == toks["qwen2_vl"](text).input_ids == toks["llava_ov_hf"](text).input_ids
    vl = json.loads((zoo["qwen2_vl"] / "config.json").read_text())
    assert [vocab["qwen2_vl"][vl[k]] for k in ("vision_start_token_id", "vision_end_token_id", "image_token_id",
                                                "video_token_id")] == [
        "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    ov = json.loads((zoo["llava_ov_hf"] / "config.json").read_text())
    assert vocab["llava_ov_hf"][ov["image_token_index"]] == "<image>" == vocab["llava_ov_hf"][100]
    assert vocab["llava_ov_hf"][ov["video_token_index"]] == "<video>"
    assert json.loads((zoo["llava15_hf"] / "config.json").read_text())["image_token_index"] == 96


def test_release_and_transformers5_layouts_load_to_the_same_model(zoo):
    from transformers import AutoModelForImageTextToText

    a = AutoModelForImageTextToText.from_pretrained(zoo["qwen2_vl"]).state_dict()
    b = AutoModelForImageTextToText.from_pretrained(zoo["qwen2_vl_tf5"]).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(a["model.language_model.norm.weight"], tensors(zoo["qwen2_vl"])["model.norm.weight"])


def test_original_llava_layouts_load_with_the_documented_key_mapping(zoo):
    from transformers import AutoConfig, LlavaForConditionalGeneration, LlavaOnevisionForConditionalGeneration

    hf = LlavaOnevisionForConditionalGeneration.from_pretrained(zoo["llava_ov_hf"]).state_dict()
    orig = LlavaOnevisionForConditionalGeneration.from_pretrained(
        zoo["llava_ov_orig"], key_mapping=ORIG_KEY_MAPPING, config=AutoConfig.from_pretrained(zoo["llava_ov_hf"]),
    ).state_dict()
    assert orig.keys() == hf.keys() and all(torch.equal(orig[k], hf[k]) for k in hf)

    hf = LlavaForConditionalGeneration.from_pretrained(zoo["llava15_hf"]).state_dict()
    cfg = AutoConfig.from_pretrained(zoo["llava15_hf"])
    cfg.text_config.vocab_size, cfg.text_config.pad_token_id = 96, 0  # the original vocabulary
    orig, info = LlavaForConditionalGeneration.from_pretrained(zoo["llava15_orig"], key_mapping=ORIG_KEY_MAPPING,
                                                               config=cfg, output_loading_info=True)
    assert all(k.startswith("model.vision_tower.") for k in info["missing_keys"]) and not info["unexpected_keys"]
    for k, v in orig.state_dict().items():
        if not k.startswith("model.vision_tower."):
            assert torch.equal(v, hf[k][:96] if k.endswith(("embed_tokens.weight", "lm_head.weight")) else hf[k]), k


@pytest.mark.parametrize("name", sorted(HF_MLLMS))
def test_mllm_reloads_bit_identically_and_generates(zoo, name, tmp_path):
    import numpy as np
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(zoo[name])
    model.save_pretrained(tmp_path, save_original_format=False)
    stored = tensors(tmp_path)
    assert stored.keys() == model.state_dict().keys()
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())
    proc = AutoProcessor.from_pretrained(zoo[name])
    side = HF_MLLMS[name]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    inputs = proc(images=image, text=proc.apply_chat_template(messages, add_generation_prompt=True),
                  return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() >= 4
    assert model.generation_config.do_sample is False
    out1 = model.generate(**inputs, max_new_tokens=4)
    out2 = model.generate(**inputs, max_new_tokens=4)
    assert out1.shape[1] > inputs["input_ids"].shape[1] and torch.equal(out1, out2)


def test_build_is_deterministic_and_reuses_existing_checkpoints(zoo, tmp_path):
    names = ["llava15_orig", "cogvlm", "qwen2_vl"]
    again = build_zoo(tmp_path, names)

    def digest(path):
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}
    assert all(digest(again[n]) == digest(zoo[n]) for n in names)
    (again["cogvlm"] / "model.safetensors").write_bytes(b"left alone")  # reuse means: not rebuilt
    assert build_zoo(tmp_path, names) == again
    assert (again["cogvlm"] / "model.safetensors").read_bytes() == b"left alone"
    with pytest.raises(ValueError, match="unknown tiny checkpoint"):
        build_zoo(tmp_path, ["llava_next"])
