"""Every model class the project loads gets the same numbers from `from_pretrained`, whether or not the checkpoint
holds the buffers the model computes itself.

transformers 5 builds a model on the meta device and fills each key the file lacks with empty memory, which only
`_init_weights` turns into numbers. A computed buffer that `_init_weights` does not make is garbage after loading
(mPLUG-Owl2's abstractor position tables were: NaN logits on a converter-made checkpoint). Freed memory is filled
with NaN before each load here, so such garbage shows as a difference instead of as lucky zeros.
"""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

import adamms_eval.ports  # noqa: F401  (registers the cogvlm / mplug_owl2 model types)
from adamms_eval.ports import build_conversation_input_ids, build_prompt, process_images, tokenizer_image_token
from adamms_eval.ports.common import load_tokenizer

# every tiny checkpoint that a model class loads (the *_orig layouts are merged, never loaded as models)
LOADED = {"qwen2_lm": AutoModelForCausalLM, "llama_lm": AutoModelForCausalLM,
          "qwen2_vl": AutoModelForImageTextToText, "qwen2_vl_tf5": AutoModelForImageTextToText,
          "llava_ov_hf": AutoModelForImageTextToText, "llava15_hf": AutoModelForImageTextToText,
          "cogvlm": AutoModelForCausalLM, "mplug_owl2": AutoModelForCausalLM}


def _poison_freed_memory():
    """Allocate and free many NaN-filled blocks of the sizes small tensors take, so that memory handed out
    next (malloc reuses freed blocks) holds NaN rather than fresh zero pages."""
    blocks = [torch.full((n,), float("nan")) for n in (16, 64, 256, 1024, 4096, 16384) for _ in range(64)]
    del blocks


def _load(auto_cls, folder):
    _poison_freed_memory()
    return auto_cls.from_pretrained(str(folder), dtype=torch.float32).eval()


def _tensors(model) -> dict[str, torch.Tensor]:
    """Parameters and every buffer, persistent or not."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _fresh(auto_cls, folder):
    """The model as its class constructs it on the CPU (every buffer computed in `__init__`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return auto_cls.from_config(AutoConfig.from_pretrained(str(folder)), dtype=torch.float32).eval()


def _without_buffer_keys(folder, dest, model) -> list[str]:
    """A copy of `folder` whose weight files lack every key that is a buffer of `model` (matched by the buffer's
    own name: file keys use other prefixes than the loaded model). Returns the keys removed."""
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_buffers()}
    leaves -= {name.rsplit(".", 1)[-1] for name, _ in model.named_parameters()}
    shutil.copytree(folder, dest)
    removed = []
    for file in sorted(dest.glob("*.safetensors")) + sorted(dest.glob("pytorch_model*.bin")):
        sd = load_file(file) if file.suffix == ".safetensors" else torch.load(file, weights_only=True)
        drop = [k for k in sd if k.rsplit(".", 1)[-1] in leaves]
        removed += drop
        kept = {k: v for k, v in sd.items() if k not in drop}
        save_file(kept, file, metadata={"format": "pt"}) if file.suffix == ".safetensors" else torch.save(kept, file)
    return removed


def _with_buffer_keys(folder, dest, model) -> list[str]:
    """A copy of a single-file .bin checkpoint with `model`'s persistent buffers added (as the original's own
    state_dict holds them); returns the keys added."""
    shutil.copytree(folder, dest)
    file = dest / "pytorch_model.bin"
    sd = torch.load(file, weights_only=True)
    buffers = {k: v for k, v in model.state_dict().items() if k not in sd and k not in dict(model.named_parameters())}
    torch.save({**sd, **buffers}, file)
    return sorted(buffers)


def _image(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (30, 40, 3), dtype=np.uint8))


def _image_prompt(name, folder, model) -> dict:
    """Model inputs for one question about one image, built as the harnesses build them."""
    question = "What colour is it?"
    if name in ("qwen2_lm", "llama_lm"):  # the plain θ0 language models take text only
        tok = load_tokenizer(folder, None, name, "")
        return dict(tok(question, return_tensors="pt"))
    if name == "cogvlm":
        tok = load_tokenizer(folder, None, name, "")
        enc = build_conversation_input_ids(model.config, tok, query=question, images=[_image()])
        return {"input_ids": enc["input_ids"][None], "token_type_ids": enc["token_type_ids"][None],
                "images": torch.stack(enc["images"])}
    if name == "mplug_owl2":
        tok = load_tokenizer(folder, None, name, "")
        return {"input_ids": torch.tensor([tokenizer_image_token(build_prompt(question), tok)]),
                "images": process_images([_image()], 28)}
    processor = AutoProcessor.from_pretrained(str(folder))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return dict(processor(text=[text], images=[_image()], return_tensors="pt"))


@pytest.mark.parametrize("name", sorted(LOADED))
def test_loading_twice_gives_identical_tensors(zoo, name):
    first, second = _tensors(_load(LOADED[name], zoo[name])), _tensors(_load(LOADED[name], zoo[name]))
    assert set(first) == set(second)
    differ = [k for k in first if not torch.equal(first[k], second[k])]
    assert not differ, f"{name}: {differ[:5]} differ between two loads of the same folder"


@pytest.mark.parametrize("name", sorted(LOADED))
def test_buffers_equal_a_fresh_model_without_them_in_the_file(zoo, name, tmp_path):
    fresh = _fresh(LOADED[name], zoo[name])
    stripped = tmp_path / name
    _without_buffer_keys(zoo[name], stripped, fresh)
    loaded, plain = _load(LOADED[name], stripped), _load(LOADED[name], zoo[name])
    for model in (loaded, plain):
        buffers = dict(model.named_buffers())
        assert buffers.keys() == dict(fresh.named_buffers()).keys()
        for key, value in fresh.named_buffers():
            assert torch.equal(buffers[key], value), f"{name}: buffer {key} is not what the model computes"
    params = dict(plain.named_parameters())
    assert all(torch.equal(v, params[k]) for k, v in loaded.named_parameters())  # weights unaffected


@pytest.mark.parametrize("name", sorted(LOADED))
def test_image_prompt_forward_is_finite(zoo, name):
    model = _load(LOADED[name], zoo[name])
    with torch.no_grad():
        logits = model(**_image_prompt(name, zoo[name], model)).logits
    assert logits.numel() and torch.isfinite(logits).all()


def test_mplug_owl2_with_and_without_position_tables_gives_the_same_logits(zoo, tmp_path):
    """The release (as its converter writes it) has no abstractor position tables; the original's state_dict
    has them. Both load to the tables the original computes, and to the same logits."""
    folder = zoo["mplug_owl2"]
    fresh = _fresh(AutoModelForCausalLM, folder)
    in_file = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert not [k for k in in_file if k.endswith(("q_pos_embed", "k_pos_embed"))]  # as the converter writes it
    added = _with_buffer_keys(folder, tmp_path / "with_tables", fresh)
    assert len(added) == 2 * fresh.config.visual_config["visual_abstractor"]["num_hidden_layers"]
    without, with_tables = _load(AutoModelForCausalLM, folder), _load(AutoModelForCausalLM, tmp_path / "with_tables")
    layer = without.model.visual_abstractor.encoder.layers[0].crossattention.attention
    from adamms_eval.ports.mplug_owl2 import sincos_1d, sincos_2d
    a = fresh.config.visual_config["visual_abstractor"]
    assert torch.equal(layer.q_pos_embed, sincos_1d(a["hidden_size"], torch.arange(a["num_learnable_queries"])))
    assert torch.equal(layer.k_pos_embed, sincos_2d(a["hidden_size"], a["grid_size"]))
    inputs = _image_prompt("mplug_owl2", folder, without)
    with torch.no_grad():
        logits = [m(**inputs).logits for m in (without, with_tables)]
    assert torch.isfinite(logits[0]).all() and torch.equal(logits[0], logits[1])
