"""Our CogVLM-chat / mPLUG-Owl2 ports: released key layouts at full size, loading quirks, routing, KV cache,
decoding, input builders, and merged weights (adamms merge vs LazyMerge) on the tiny checkpoints."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adamms_eval.errors import AdammsError
from adamms_eval.ports import (IMAGE_TOKEN_INDEX, CogVLMConfig, CogVLMForCausalLM, MPLUGOwl2Config,
                               MPLUGOwl2LlamaForCausalLM, build_conversation_input_ids, build_position_ids,
                               build_prompt, process_images, tokenizer_image_token)
from adamms_eval.ports.cogvlm import history_to_prompt, vision_expert_mask
from adamms_eval.ports.common import load_tokenizer
from adamms_eval.ports.mplug_owl2 import expand_to_square

RELEASED = Path(__file__).parent / "fixtures" / "released"
PORTS = {"cogvlm": (CogVLMForCausalLM, CogVLMConfig, "cogvlm-chat-hf"),
         "mplug_owl2": (MPLUGOwl2LlamaForCausalLM, MPLUGOwl2Config, "mplug-owl2-llama2-7b")}


def _released_layouts():
    """tests/fixtures/released/layouts.py: expected shapes written from the published configs and model code."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("released_layouts", RELEASED / "layouts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image(seed=0, w=40, h=30):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def ports(zoo):
    return {n: (PORTS[n][0].from_pretrained(zoo[n]).eval(), load_tokenizer(zoo[n], None, n, "")) for n in PORTS}


def inputs(name, model, tok, question="What colour is it?", img=True):
    if name == "cogvlm":
        enc = build_conversation_input_ids(model.config, tok, query=question, images=[image()] if img else None)
        out = {k: enc[k][None] for k in ("input_ids", "token_type_ids")}
        return {**out, "images": torch.stack(enc["images"])} if img else out
    ids = torch.tensor([tokenizer_image_token(build_prompt(question, with_image=img), tok)])
    return {"input_ids": ids, "images": process_images([image()], 28)} if img else {"input_ids": ids}


# ---------------------------------------------------------------- full-size layouts --------------------------------
@pytest.mark.parametrize("name", sorted(PORTS))
def test_full_size_model_has_the_released_keys_and_shapes(name):
    cls, cfg_cls, folder = PORTS[name]
    cfg = json.loads((RELEASED / folder / "config.json").read_text())
    with torch.device("meta"):
        model = cls(cfg_cls.from_dict(cfg))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    computed = {k for k, _ in model.named_buffers()}  # made by the model: mPLUG-Owl2's abstractor position tables
    index = json.loads(next((RELEASED / folder).glob("*.index.json")).read_text())["weight_map"]
    released = {k for k in index if not k.endswith("rotary_emb.inv_freq")}  # old buffers: ignored on load
    assert set(ours) - computed == released and len(index) - len(released) == 32
    assert len(computed) == (0 if name == "cogvlm" else 12) and not computed & set(index)
    if name == "cogvlm":  # spot checks from the public config (32 layers, 4096 / 11008, EVA2-CLIP-E 1792 x 63)
        assert len(ours) == 1155 and model.config.num_image_positions == 1227
        expect = {"model.layers.31.self_attn.language_expert_query_key_value.weight": (12288, 4096),
                  "model.layers.0.self_attn.vision_expert_dense.weight": (4096, 4096),
                  "model.layers.5.mlp.vision_mlp.gate_proj.weight": (11008, 4096),
                  "model.vision.transformer.layers.62.attention.query_key_value.weight": (5376, 1792),
                  "model.vision.transformer.layers.62.mlp.fc1.weight": (15360, 1792),
                  "model.vision.patch_embedding.position_embedding.weight": (1226, 1792),
                  "model.vision.linear_proj.linear_proj.weight": (4096, 1792),
                  "model.vision.linear_proj.dense_4h_to_h.weight": (4096, 11008),
                  "model.vision.boi": (1, 1, 4096), "lm_head.weight": (32000, 4096)}
    else:  # LLaMA-2-7B with multiway k/v/norms, ViT-L/14 at 448 px, 6-layer abstractor with 64 queries
        assert len(ours) == 862 and model.config.num_image_tokens == 65
        expect = {"model.layers.31.self_attn.k_proj.multiway.1.weight": (4096, 4096),
                  "model.layers.0.input_layernorm.multiway.0.weight": (4096,),
                  "model.vision_model.embeddings.position_embedding": (1, 1025, 1024),
                  "model.vision_model.encoder.layers.23.self_attn.query_key_value.weight": (3072, 1024),
                  "model.visual_abstractor.encoder.layers.5.crossattention.output.mlp.w1.weight": (2816, 1024),
                  "model.visual_abstractor.encoder.layers.0.crossattention.attention.k_pos_embed": (1025, 1024),
                  "model.visual_abstractor.query_embeds": (1, 64, 1024), "model.visual_abstractor.vit_eos": (1, 1, 4096)}
    assert {k: ours[k] for k in expect} == expect
    layouts = _released_layouts()
    assert {k: v for k, v in ours.items() if k not in computed} == {
        k: v for k, v in layouts.shapes(folder, cfg).items() if not k.endswith("inv_freq")}


@pytest.mark.parametrize("name", sorted(PORTS))
def test_released_quirks_load_unchanged(zoo, name, tmp_path):
    """auto_map / model_type in config.json, old rotary inv_freq buffers among the weights, AutoModel lookup."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForCausalLM
    src = zoo[name]
    shutil.copytree(src, tmp_path / name)
    d = tmp_path / name
    if name == "cogvlm":
        assert "auto_map" in json.loads((d / "config.json").read_text())
        sd = load_file(d / "model.safetensors")
        save_file({**sd, "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}, d / "model.safetensors",
                  metadata={"format": "pt"})
    else:
        sd = torch.load(d / "pytorch_model.bin", weights_only=True)
        torch.save({**sd, "model.layers.1.self_attn.rotary_emb.inv_freq": torch.ones(8)}, d / "pytorch_model.bin")
    model, info = PORTS[name][0].from_pretrained(d, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]  # computed buffers are not reported missing
    computed = {k for k, _ in model.named_buffers()}  # mPLUG-Owl2's position tables: not in the release
    assert set(model.state_dict()) - computed == set(sd) and not computed & set(sd)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert type(AutoConfig.from_pretrained(d)).__name__ == PORTS[name][1].__name__
    assert type(AutoModelForCausalLM.from_pretrained(d)) is PORTS[name][0]


# ---------------------------------------------------------------- routing rules ------------------------------------
def test_cogvlm_routing_and_positions_follow_the_original_rules():
    tt = torch.tensor([[0, 1, 1, 1, 1, 0, 0]])  # BOS, BOI, 2 patches, EOI, text
    assert vision_expert_mask(tt).tolist() == [[False, True, True, True, False, False, False]]  # EOI -> language
    assert build_position_ids(tt).tolist() == [[0, 1, 2, 2, 3, 4, 5]]  # patches share one position
    padded = torch.tensor([[0, 0, 1, 1, 1, 1, 0]])
    # left padding does not advance, and the first real token (BOS) gets 0 as in the prompt alone (the original
    # counts from the padding slot, giving BOS 1 and shifting the row by one: a batched answer would then differ
    # from the one-at-a-time answer by RoPE rounding; tests/test_batched_search.py)
    assert build_position_ids(padded, torch.tensor([[0, 1, 1, 1, 1, 1, 1]])).tolist() == [[0, 0, 1, 2, 2, 3, 4]]


def test_cogvlm_language_expert_on_text_is_llama(ports):
    """Text-only, CogVLM's language branch must equal transformers' LLaMA with q|k|v split out of the fused rows."""
    from transformers import LlamaConfig, LlamaForCausalLM
    model, tok = ports["cogvlm"]
    c = model.config
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                                         intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
                                         num_attention_heads=c.num_attention_heads, rms_norm_eps=c.rms_norm_eps,
                                         tie_word_embeddings=False)).eval()
    sd, h = model.state_dict(), c.hidden_size
    ref = {"model.embed_tokens.weight": sd["model.embed_tokens.weight"], "model.norm.weight": sd["model.norm.weight"],
           "lm_head.weight": sd["lm_head.weight"]}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        for j, x in enumerate("qkv"):
            ref[f"{p}self_attn.{x}_proj.weight"] = sd[f"{p}self_attn.language_expert_query_key_value.weight"][j * h:(j + 1) * h]
        ref[f"{p}self_attn.o_proj.weight"] = sd[f"{p}self_attn.language_expert_dense.weight"]
        for x in ("gate_proj", "up_proj", "down_proj"):
            ref[f"{p}mlp.{x}.weight"] = sd[f"{p}mlp.language_mlp.{x}.weight"]
        for x in ("input_layernorm", "post_attention_layernorm"):
            ref[f"{p}{x}.weight"] = sd[f"{p}{x}.weight"]
    llama.load_state_dict(ref)
    ids = inputs("cogvlm", model, tok, img=False)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, llama(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_mplug_text_branch_on_text_is_llama(ports):
    from transformers import LlamaConfig, LlamaForCausalLM
    model, tok = ports["mplug_owl2"]
    c = model.config
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                                         intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
                                         num_attention_heads=c.num_attention_heads, rms_norm_eps=c.rms_norm_eps,
                                         tie_word_embeddings=False)).eval()
    ref = {k.replace(".multiway.0", ""): v for k, v in model.state_dict().items()
           if k.startswith(("model.layers.", "model.embed_tokens", "model.norm", "lm_head")) and ".multiway.1" not in k}
    llama.load_state_dict(ref)
    ids = inputs("mplug_owl2", model, tok, img=False)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, llama(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- cache, decoding, experts ---------------------------
@pytest.mark.parametrize("name", sorted(PORTS))
def test_cached_decoding_gives_the_uncached_logits(ports, name):
    model, tok = ports[name]
    x = inputs(name, model, tok)
    with torch.no_grad():
        out = model.generate(**x, max_new_tokens=5, do_sample=False, output_logits=True, return_dict_in_generate=True)
        n = len(out.logits)  # fewer than 5 if EOS came first
        new = out.sequences[0, -n:]
        if name == "cogvlm":
            ids = out.sequences
            tt = torch.cat([x["token_type_ids"], torch.zeros(1, n, dtype=torch.long)], 1)
            full = model(input_ids=ids, token_type_ids=tt, images=x["images"], use_cache=False).logits
        else:
            ids = torch.cat([x["input_ids"], new[None]], 1)
            full = model(input_ids=ids, images=x["images"], use_cache=False).logits
    cached = torch.stack(out.logits, 1)[0]
    assert n >= 2
    torch.testing.assert_close(cached, full[0, -n - 1:-1], rtol=1e-4, atol=1e-4)
    assert torch.equal(full[0, -n - 1:-1].argmax(-1), new)


@pytest.mark.parametrize("name", sorted(PORTS))
def test_greedy_is_deterministic_and_sampling_follows_the_seed(ports, name):
    model, tok = ports[name]
    x = inputs(name, model, tok)
    with torch.no_grad():
        greedy = [model.generate(**x, max_new_tokens=6, do_sample=False) for _ in range(2)]
        sampled = []
        for seed in (0, 0, 1):
            torch.manual_seed(seed)
            sampled.append(model.generate(**x, max_new_tokens=6, do_sample=True, temperature=1.5))
    assert torch.equal(greedy[0], greedy[1])
    assert torch.equal(sampled[0], sampled[1])
    assert sampled[0].tolist() != greedy[0].tolist() or sampled[2].tolist() != greedy[0].tolist()


@pytest.mark.parametrize("name,key", [("cogvlm", "model.layers.0.self_attn.vision_expert_query_key_value.weight"),
                                      ("cogvlm", "model.layers.1.mlp.vision_mlp.down_proj.weight"),
                                      ("mplug_owl2", "model.layers.0.self_attn.v_proj.multiway.1.weight"),
                                      ("mplug_owl2", "model.layers.1.input_layernorm.multiway.1.weight")])
def test_vision_branch_change_moves_only_image_prompts(zoo, name, key):
    model = PORTS[name][0].from_pretrained(zoo[name]).eval()
    tok = load_tokenizer(zoo[name], None, name, "")
    text, img = inputs(name, model, tok, img=False), inputs(name, model, tok)
    with torch.no_grad():
        before = model(**text).logits, model(**img).logits
        model.state_dict()[key].add_(0.5)
        after = model(**text).logits, model(**img).logits
    assert torch.equal(before[0], after[0])  # text never routes through the vision branch
    assert (before[1] - after[1]).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(PORTS))
def test_offloaded_parts_generate_as_the_loaded_model(ports, zoo, name, tmp_path):
    """device_map with offloaded modules (params on meta, loaded by accelerate's hooks: what "cpu" entries mean
    beside a GPU, and "disk" anywhere): the port must leave device placement of offloaded weights to the hooks."""
    from adamms_eval import LazyMerge
    model, tok = ports[name]
    top = [f"model.{n}" for n, _ in model.model.named_children() if n != "layers"]
    device_map = {**{k: "disk" for k in top}, "model.layers.0": "disk", "model.layers.1": "cpu", "model.norm": "cpu",
                  "lm_head": "disk"}
    offloaded = PORTS[name][0].from_pretrained(zoo[name], device_map=device_map, offload_folder=tmp_path).eval()
    assert {p.device.type for p in offloaded.parameters()} == {"cpu", "meta"}
    x = inputs(name, model, tok)
    with torch.no_grad():
        assert torch.equal(offloaded.generate(**x, max_new_tokens=6, do_sample=False),
                           model.generate(**x, max_new_tokens=6, do_sample=False))
    with pytest.raises(AdammsError, match="offloaded .meta device.; load the model onto real devices"):
        LazyMerge(offloaded, zoo["llava15_hf" if name == "cogvlm" else "cogvlm"], base_tokenizer=zoo[name],
                  progress=False)


# ---------------------------------------------------------------- input builders -----------------------------------------
def test_cogvlm_input_builder_as_the_original(ports):
    model, tok = ports["cogvlm"]
    assert history_to_prompt("chat", [], "Hi?") == "Question: Hi? Answer:"
    assert history_to_prompt("vqa", [], "Hi?") == "Question: Hi? Short answer:"
    assert history_to_prompt("base", [("a", "b")], "Hi?") == "Hi?"
    assert history_to_prompt("chat", [("a?", "b")], "c?") == "Question: a? Answer: b\nQuestion: c? Answer:"
    enc = build_conversation_input_ids(model.config, tok, query="Hi?", images=[image()])
    n = model.config.num_image_positions
    assert n == (28 // 14) ** 2 + 2
    text = tok.encode("Question: Hi? Answer:", add_special_tokens=False)
    assert enc["input_ids"].tolist() == [tok.bos_token_id] + [tok.pad_token_id] * n + text
    assert enc["token_type_ids"].tolist() == [0] + [1] * n + [0] * len(text)
    assert enc["images"][0].shape == (3, 28, 28)
    assert CogVLMConfig().num_image_positions == 1227  # (490 / 14)^2 + BOI + EOI


def test_mplug_input_builder_as_the_original(ports):
    _, tok = ports["mplug_owl2"]
    assert build_prompt("Hi?") == "USER: <|image|>Hi? ASSISTANT:"
    ids = tokenizer_image_token(build_prompt("Hi?"), tok)
    before, after = tok("USER: ").input_ids, tok("Hi? ASSISTANT:").input_ids  # each with its BOS
    assert before[0] == after[0] == tok.bos_token_id
    assert ids == before + [IMAGE_TOKEN_INDEX] + after[1:]  # BOS once, at the start
    sq = expand_to_square(Image.new("RGB", (40, 20), (255, 255, 255)), (1, 2, 3))
    assert sq.size == (40, 40) and sq.getpixel((0, 0)) == (1, 2, 3) and sq.getpixel((20, 20)) == (255, 255, 255)
    px = process_images([image(), image(1, 20, 50)], 28)
    assert px.shape == (2, 3, 28, 28)


def test_tokenizer_comes_from_the_folder_or_the_argument(zoo, tmp_path):
    bare = tmp_path / "cogvlm"
    shutil.copytree(zoo["cogvlm"], bare, ignore=shutil.ignore_patterns("tokenizer*", "chat_template*"))
    with pytest.raises(AdammsError, match="has no tokenizer and none was given: CogVLM uses the Vicuna.*tokenizer=PATH"):
        load_tokenizer(bare, None, "CogVLM", "Vicuna-7B-v1.5")
    assert load_tokenizer(bare, zoo["llama_lm"], "CogVLM", "Vicuna-7B-v1.5").bos_token_id == 1
    with pytest.raises(AdammsError, match="holds no tokenizer files"):
        load_tokenizer(bare, tmp_path, "CogVLM", "Vicuna-7B-v1.5")


# ---------------------------------------------------------------- merges ------------------------------------------------
@pytest.mark.parametrize("base,other", [("cogvlm", "llava15_hf"), ("mplug_owl2", "cogvlm")])
def test_merge_on_disk_and_in_place_generate_identically(zoo, tmp_path, base, other):
    from adamms_eval import LazyMerge
    from adamms_eval.merging.merger import open_merger, write_merged
    cls = PORTS[base][0]
    merged = write_merged(open_merger(zoo[base], zoo[other]), 0.4, tmp_path / "merged", progress=False)
    on_disk = cls.from_pretrained(merged).eval()
    in_place = cls.from_pretrained(zoo[base]).eval()
    lazy = LazyMerge(in_place, zoo[other], "linear", None, {}, storage="host", base_tokenizer=zoo[base],
                     progress=False)
    lazy.set(0.4)
    a, b = on_disk.state_dict(), in_place.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tok = load_tokenizer(merged, None, base, "")
    x = inputs(base, on_disk, tok)
    with torch.no_grad():
        out = on_disk.generate(**x, max_new_tokens=8, do_sample=False)
        assert torch.equal(out, in_place.generate(**x, max_new_tokens=8, do_sample=False))
        lazy.set(0.0)
        base_model = cls.from_pretrained(zoo[base]).eval()
        assert torch.equal(in_place.generate(**x, max_new_tokens=8, do_sample=False),
                           base_model.generate(**x, max_new_tokens=8, do_sample=False))


@pytest.mark.parametrize("name", sorted(PORTS))
def test_one_command_check_captions_an_image(zoo, name, tmp_path, capsys):
    from adamms_eval.ports.check import main
    image().save(tmp_path / "x.png")
    args = [str(zoo[name]), "--image", str(tmp_path / "x.png"), "--dtype", "float32", "--device-map", "cpu",
            "--max-new-tokens", "6"]
    assert main(args) == 0
    first = capsys.readouterr().out.strip()
    assert main(args) == 0 and capsys.readouterr().out.strip() == first  # greedy
    assert main([str(zoo[name]), "--image", str(tmp_path / "missing.png")]) == 2
    assert "no image at" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(PORTS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_loads_and_agrees_with_fp32(zoo, ports, name, dtype):
    model32, tok = ports[name]
    model = PORTS[name][0].from_pretrained(zoo[name], dtype=dtype).eval()
    assert model.lm_head.weight.dtype == dtype and model.model.embed_tokens.weight.dtype == dtype
    x = inputs(name, model32, tok)
    half = {k: v.to(dtype) if v.is_floating_point() else v for k, v in x.items()}
    with torch.no_grad():
        diff = (model(**half).logits - model32(**x).logits).abs().max().item()
        assert model.generate(**half, max_new_tokens=3, do_sample=False).shape[0] == 1
    assert diff < 0.05  # rounding only (fp32 logits are ~0.9 in magnitude)


def test_mplug_vision_tower_is_a_clip_vit(ports):
    """mPLUG-Owl2's ViT = transformers' CLIPVisionModel (pre-LN, QuickGELU) + post_layernorm on every token, once the
    fused query_key_value rows (grouped per head as q, k, v) are split into q, k, v projections."""
    from transformers import CLIPVisionConfig, CLIPVisionModel
    model, _ = ports["mplug_owl2"]
    v = model.config.visual_config["visual_model"]
    heads, h = v["num_attention_heads"], v["hidden_size"]
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=h, intermediate_size=v["intermediate_size"],
                                            num_hidden_layers=v["num_hidden_layers"], num_attention_heads=heads,
                                            image_size=v["image_size"], patch_size=v["patch_size"],
                                            hidden_act="quick_gelu", layer_norm_eps=v["layer_norm_eps"])).eval()
    sd = {k.removeprefix("model.vision_model."): t for k, t in model.state_dict().items()
          if k.startswith("model.vision_model.")}
    ref = {"embeddings.class_embedding": sd["embeddings.cls_token"].flatten(),
           "embeddings.patch_embedding.weight": sd["embeddings.patch_embed.weight"],
           "embeddings.position_embedding.weight": sd["embeddings.position_embedding"][0],
           "pre_layrnorm.weight": sd["embeddings.pre_layernorm.weight"],
           "pre_layrnorm.bias": sd["embeddings.pre_layernorm.bias"],
           "post_layernorm.weight": sd["post_layernorm.weight"], "post_layernorm.bias": sd["post_layernorm.bias"]}
    for i in range(v["num_hidden_layers"]):
        p, q = f"encoder.layers.{i}.", f"encoder.layers.{i}."
        for t in ("weight", "bias"):
            fused = sd[f"{p}self_attn.query_key_value.{t}"].reshape(heads, 3, h // heads, *(() if t == "bias" else (h,)))
            for j, x in enumerate("qkv"):
                ref[f"{q}self_attn.{x}_proj.{t}"] = fused[:, j].reshape(h, *(() if t == "bias" else (h,)))
            ref[f"{q}self_attn.out_proj.{t}"] = sd[f"{p}self_attn.dense.{t}"]
            ref[f"{q}layer_norm1.{t}"] = sd[f"{p}input_layernorm.{t}"]
            ref[f"{q}layer_norm2.{t}"] = sd[f"{p}post_attention_layernorm.{t}"]
            ref[f"{q}mlp.fc1.{t}"], ref[f"{q}mlp.fc2.{t}"] = sd[f"{p}mlp.fc1.{t}"], sd[f"{p}mlp.fc2.{t}"]
    tower = getattr(clip, "vision_model", clip)  # transformers 5 keeps CLIP's vision model flat
    missing, unexpected = tower.load_state_dict(ref, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing)
    pixels = process_images([image()], v["image_size"])
    with torch.no_grad():
        want = tower.post_layernorm(clip(pixel_values=pixels).last_hidden_state)
        torch.testing.assert_close(model.model.vision_model(pixels), want, rtol=1e-5, atol=1e-5)
