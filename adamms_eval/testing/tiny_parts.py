"""Parts the tiny checkpoint builders share: sizes, seeded perturbations, key renaming, file writers, and the
builder base class (seeded init, θ0, an MLLM around a given language model, save_pretrained with a greedy config).

Used by `tiny` (the paper pairs) and `tiny_current` (the current pairs)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch


NOISE = 0.02  # std of every perturbation ("fine-tuning"); the scale of the init itself (initializer_range)
_LM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, tie_word_embeddings=False)
QWEN = dict(_LM, num_key_value_heads=2, vocab_size=128, bos_token_id=97, eos_token_id=99, max_window_layers=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6})
LLAMA = dict(_LM, num_key_value_heads=4, vocab_size=96, bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5)

# ---- tensors ----
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _noise(t: torch.Tensor, g: torch.Generator, scale: float = NOISE) -> torch.Tensor:
    return t + scale * torch.randn(t.shape, generator=g)


def _derive(theta0: dict, seed: int, trained_rows: int | None = None) -> dict[str, torch.Tensor]:
    """θ0 + N(0, NOISE²) on every tensor; embedding/lm_head rows >= trained_rows stay as in θ0 (untrained)."""
    g, out = _gen(seed), {}
    for k, t in theta0.items():
        d = NOISE * torch.randn(t.shape, generator=g)
        if trained_rows is not None and k in ("model.embed_tokens.weight", "lm_head.weight"):
            d[trained_rows:] = 0
        out[k] = t + d
    return out


def _random(shapes: dict[str, tuple], seed: int) -> dict[str, torch.Tensor]:
    """Stand-ins for towers no transformers class implements: N(0, NOISE²), and 1 + that for norm weights."""
    g = _gen(seed)
    return {k: _noise(torch.full(s, 1.0 if re.search(r"(norm\w*|ln\w*)\.weight$", k) else 0.0), g)
            for k, s in shapes.items()}


def _linear(name: str, out: int, inp: int, bias: bool = True) -> dict[str, tuple]:
    return {f"{name}.weight": (out, inp), **({f"{name}.bias": (out,)} if bias else {})}


def _layernorm(name: str, n: int) -> dict[str, tuple]:
    return {f"{name}.weight": (n,), f"{name}.bias": (n,)}


def _vit_block(p: str, h: int, attn: str) -> dict[str, tuple]:
    """A pre-LN ViT block in EVA-CLIP / mPLUG-Owl naming (fused query_key_value + dense, fc1/fc2, all biased)."""
    return {**_layernorm(f"{p}input_layernorm", h), **_linear(f"{p}{attn}.query_key_value", 3 * h, h),
            **_linear(f"{p}{attn}.dense", h, h), **_linear(f"{p}mlp.fc1", 2 * h, h), **_linear(f"{p}mlp.fc2", h, 2 * h),
            **_layernorm(f"{p}post_attention_layernorm", h)}


def _rename(sd: dict, rules: list[tuple[str, str | None]]) -> dict:
    """First matching regex rule wins; a replacement of None drops the key; an unmatched key is an error."""
    out = {}
    for k, v in sd.items():
        pat, rep = next(((p, r) for p, r in rules if re.search(p, k)), (None, None))
        if pat is None:
            raise KeyError(f"no rename rule for {k}")
        if rep is not None:
            out[re.sub(pat, rep, k)] = v
    return out


# θ0 (…ForCausalLM) keys -> in-memory keys of the transformers-5 MLLM classes used here
LM_INTO_MLLM = [(r"^model\.", "model.language_model."), (r"^lm_head\.", "lm_head.")]
# in-memory LLaVA / OneVision keys -> original liuhaotian / lmms-lab keys
ORIG_LLAVA = [(r"^model\.language_model\.", "model."),
              (r"^model\.vision_tower\.", "model.vision_tower.vision_tower.vision_model."),
              (r"^model\.multi_modal_projector\.linear_1\.", "model.mm_projector.0."),
              (r"^model\.multi_modal_projector\.linear_2\.", "model.mm_projector.2."),
              (r"^model\.image_newline$", "model.image_newline"), (r"^lm_head\.", "lm_head.")]
# what save_pretrained writes for a from-scratch LLaVA -> the Hub files (vision tower under vision_model)
HUB_VISION = [(r"^vision_tower\.(?!vision_model\.)", "vision_tower.vision_model."), (r"^", "")]


def _plain(sd: dict, dtype) -> dict:
    return {k: v.detach().to(dtype).contiguous().clone() for k, v in sd.items()}


def _save_safetensors(sd: dict, file: Path, dtype) -> None:
    from safetensors.torch import save_file
    save_file(_plain(sd, dtype), str(file), metadata={"format": "pt"})


def _save_json(obj: dict, file: Path) -> None:
    file.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _flat_config(text_cfg, arch: str, model_type: str, dtype, **extra) -> dict:
    """A v4-era config.json with the LM fields at top level, as LLaVA, lmms-lab, CogVLM and mPLUG-Owl2 ship it."""
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "initializer_range",
              "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings", "use_cache")
    return {**{f: getattr(text_cfg, f, None) for f in fields}, "architectures": [arch], "model_type": model_type,
            "rope_theta": text_cfg.rope_parameters["rope_theta"], "rope_scaling": None,
            "torch_dtype": str(dtype).removeprefix("torch."), **extra}




class BuilderBase:
    """Seeded models and the writer every transformers-class checkpoint goes through."""

    def __init__(self, dtype):
        self.dtype = dtype

    @staticmethod
    def _init(model_cls, config, seed: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return model_cls(config).eval()

    def _theta0(self, model_cls, config, seed: int) -> dict:
        g = _gen(seed + 1000)
        return {k: _noise(torch.ones_like(v), g, 0.1) if k.endswith("norm.weight") else v.detach().clone()
                for k, v in self._init(model_cls, config, seed).state_dict().items()}


    def _mllm(self, model_cls, config, seed: int, lm: dict):
        """A transformers-5 MLLM with a random vision part whose LM is `lm` (extra embedding rows keep their init)."""
        model = self._init(model_cls, config, seed)
        sd = model.state_dict()
        for k, v in _rename(lm, LM_INTO_MLLM).items():
            sd[k] = torch.cat([v, sd[k][len(v):]]) if k.endswith(("embed_tokens.weight", "lm_head.weight")) else v
        model.load_state_dict(sd)
        return model.to(self.dtype)


    def _save_hf(self, model, path: Path, processor, eos, pad, hub_vision: bool = False, **kw) -> None:
        from transformers import GenerationConfig
        from transformers.utils import logging
        bos = model.config.get_text_config().bos_token_id
        model.generation_config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=16, bos_token_id=bos,
                                                   eos_token_id=eos, pad_token_id=pad)
        bar = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()  # no "Writing model shards" bars
        try:
            model.save_pretrained(path, **kw)
        finally:
            logging.enable_progress_bar() if bar else None
        processor.save_pretrained(path)
        if hub_vision:
            from safetensors.torch import load_file
            file = path / "model.safetensors"
            _save_safetensors(_rename(load_file(str(file)), HUB_VISION), file, self.dtype)

    # ---------------- one writer per checkpoint ----------------
