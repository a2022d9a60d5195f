"""Tiny checkpoints of the current pairs, in their real on-disk layouts, grown from one θ0 per family.

* Qwen2 family (θ0 ``qwen2_lm``, standing in for Qwen2.5-7B): ``qwen2_5_vl`` / ``qwen2_5_vl_tf5`` (release layout
  model.* + visual.* / transformers-5 layout); ``internvl_hf`` (InternVL3-hf, 128 embedding rows for Qwen2.5's tokens
  and InternVL's 9 added ones) and ``internvl3``, the same weights in InternVL3's remote-code layout
  (language_model.model.*, InternViT ``vision_model.*`` with fused qkv, ``mlp1``), as OpenGVLab publishes it.
* Qwen3 family (θ0 ``qwen3_lm``: q_norm / k_norm, no qkv bias, standing in for Qwen3-8B-Base): ``qwen3_vl``
  (model.language_model.*, model.visual.* with DeepStack mergers) and ``llava_ov_1_5`` (LLaVA-OneVision-1.5's
  remote-code layout: model.*, lm_head, RICE ViT ``visual.*``; random vision tensors, as no transformers class has it).

The remote-code layouts (``internvl3``, ``llava_ov_1_5``) ship config.json, weights and a tokenizer, no model code:
they serve as the other model of a merge, whose tensors are read, never run.
"""
from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

import torch

from .tiny_parts import QWEN, _derive, _layernorm, _linear, _random, _rename, _save_json, _save_safetensors
from .tokenizers import INTERNVL_EXTRA, QWEN3_EXTRA, QWEN25_EXTRA, QWEN_VOCAB, qwen_tokenizer

CURRENT_NAMES = ("qwen3_lm", "qwen2_5_vl", "qwen2_5_vl_tf5", "internvl_hf", "internvl3", "qwen3_vl", "llava_ov_1_5")
SEED = {"qwen3_theta0": 2, "qwen2_5_vl": 16, "internvl": 17, "qwen3_vl": 18, "llava_ov_1_5": 19}
QWEN3 = dict(QWEN, head_dim=16)  # Qwen3Config: attention_bias False (no q/k/v bias), q_norm / k_norm per layer
MROPE = dict(QWEN["rope_parameters"], mrope_section=[2, 3, 3])  # head_dim 16: 8 rotary pairs over t, h, w
VISION_TOKENS = "<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>"
INTERNVL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                   "video_token": "<|video_pad|>"}  # the tokenizer attributes InternVLProcessor reads
# transformers' InternVL (-hf, in memory) -> InternVL's remote code (modeling_internvl_chat.py / modeling_intern_vit.py)
HF_TO_REMOTE = [(r"^model\.language_model\.", "language_model.model."), (r"^lm_head\.", "language_model.lm_head."),
                (r"^model\.vision_tower\.embeddings\.cls_token$", "vision_model.embeddings.class_embedding"),
                (r"^model\.vision_tower\.embeddings\.patch_embeddings\.projection\.",
                 "vision_model.embeddings.patch_embedding."),
                (r"^model\.vision_tower\.embeddings\.position_embeddings$",
                 "vision_model.embeddings.position_embedding"),
                (r"^model\.vision_tower\.encoder\.layer\.(\d+)\.lambda_(\d)$", r"vision_model.encoder.layers.\1.ls\2"),
                (r"^model\.vision_tower\.encoder\.layer\.(\d+)\.attention\.projection_layer\.",
                 r"vision_model.encoder.layers.\1.attn.proj."),
                (r"^model\.vision_tower\.encoder\.layer\.(\d+)\.layernorm_before\.",
                 r"vision_model.encoder.layers.\1.norm1."),
                (r"^model\.vision_tower\.encoder\.layer\.(\d+)\.layernorm_after\.",
                 r"vision_model.encoder.layers.\1.norm2."),
                (r"^model\.vision_tower\.encoder\.layer\.(\d+)\.mlp\.", r"vision_model.encoder.layers.\1.mlp."),
                (r"^model\.multi_modal_projector\.layer_norm\.", "mlp1.0."),
                (r"^model\.multi_modal_projector\.linear_1\.", "mlp1.1."),
                (r"^model\.multi_modal_projector\.linear_2\.", "mlp1.3.")]
VIT_QKV = re.compile(r"^model\.vision_tower\.encoder\.layer\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$")


def _ids(extra: list[str]) -> dict[str, int]:
    return {t: len(QWEN_VOCAB) + i for i, t in enumerate(extra)}


def _vision_ids(extra: list[str]) -> dict:
    ids = _ids(extra)
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def qwen_vl_processor(processor_cls, extra: list[str], video_cls, side: int = 56, patch: int = 14):
    """A Qwen-VL processor for one image size: `side` x `side` pixels (patches of `patch`, merged 2 x 2)."""
    from transformers import Qwen2VLImageProcessor
    tok = qwen_tokenizer(extra, *VISION_TOKENS)
    pixels = dict(min_pixels=side * side, max_pixels=side * side)
    return processor_cls(image_processor=Qwen2VLImageProcessor(patch_size=patch, **pixels),
                         video_processor=video_cls(patch_size=patch, **pixels), tokenizer=tok,
                         chat_template=tok.chat_template)


def _internvl_remote(hf_sd: dict) -> dict:
    """InternVL-hf tensors under InternVL's remote-code names: the ViT's q / k / v (and biases) fused into attn.qkv."""
    sd = _rename({k: v for k, v in hf_sd.items() if not VIT_QKV.match(k)}, HF_TO_REMOTE)
    for k in hf_sd:
        m = VIT_QKV.match(k)
        if m and m[2] == "q":
            sd[f"vision_model.encoder.layers.{m[1]}.attn.qkv.{m[3]}"] = torch.cat(
                [hf_sd[k.replace(".q_proj.", f".{x}_proj.")] for x in "qkv"])
    return sd


def _rice_vit_shapes(h: int, depth: int, text_hidden: int, heads: int) -> dict[str, tuple]:
    """LLaVA-OneVision-1.5's RICE ViT under its on-disk names (patch 14, 2 x 2 merger into the LM)."""
    merged = 4 * h
    s = {"visual.class_embedding": (h,), "visual.class_pos_emb": (1, h // heads // 2),
         "visual.patch_embed.proj.weight": (h, 3, 14, 14), **_layernorm("visual.pre_layernorm", h)}
    for i in range(depth):
        p = f"visual.blocks.{i}."
        s.update({**_layernorm(p + "norm1", h), **_layernorm(p + "norm2", h), **_linear(p + "attn.qkv", 3 * h, h),
                  **_linear(p + "attn.proj", h, h), **_linear(p + "mlp.fc1", 2 * h, h),
                  **_linear(p + "mlp.fc2", h, 2 * h)})
    return {**s, **_layernorm("visual.merger.ln_q", h), **_linear("visual.merger.mlp.0", merged, merged),
            **_linear("visual.merger.mlp.2", text_hidden, merged)}


class CurrentPairs:
    """The builders of the current pairs (mixed into tiny._Builder, which provides qwen_theta0 and BuilderBase)."""

    @cached_property
    def qwen3_theta0(self) -> dict:
        from transformers import Qwen3Config, Qwen3ForCausalLM
        return self._theta0(Qwen3ForCausalLM, Qwen3Config(**QWEN3), SEED["qwen3_theta0"])

    @cached_property
    def qwen2_5_vl_model(self):
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        cfg = Qwen2_5_VLConfig(
            text_config=dict(QWEN, rope_parameters=MROPE), tie_word_embeddings=False, **_vision_ids(QWEN25_EXTRA),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                               fullatt_block_indexes=[1]))
        lm = _derive(self.qwen_theta0, SEED["qwen2_5_vl"], trained_rows=len(QWEN_VOCAB + QWEN25_EXTRA))
        return self._mllm(Qwen2_5_VLForConditionalGeneration, cfg, SEED["qwen2_5_vl"], lm)

    @cached_property
    def internvl_model(self):
        from transformers import InternVLConfig, InternVLForConditionalGeneration
        cfg = InternVLConfig(
            text_config=dict(QWEN, model_type="qwen2"),
            image_token_id=_ids(QWEN25_EXTRA + INTERNVL_EXTRA)["<IMG_CONTEXT>"],
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=[56, 56], patch_size=[14, 14], attention_bias=True),
            image_seq_length=4, downsample_ratio=0.5, tie_word_embeddings=False)  # 4 x 4 patches -> 2 x 2
        lm = _derive(self.qwen_theta0, SEED["internvl"])  # all 128 rows are tokens: Qwen2.5's and InternVL's 9
        return self._mllm(InternVLForConditionalGeneration, cfg, SEED["internvl"], lm)

    @cached_property
    def qwen3_vl_model(self):
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
        cfg = Qwen3VLConfig(
            text_config=dict(QWEN3, rope_parameters=dict(MROPE, mrope_interleaved=True)), tie_word_embeddings=False,
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                               patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                               deepstack_visual_indexes=[0, 1]), **_vision_ids(QWEN3_EXTRA))
        lm = _derive(self.qwen3_theta0, SEED["qwen3_vl"], trained_rows=len(QWEN_VOCAB + QWEN3_EXTRA))
        return self._mllm(Qwen3VLForConditionalGeneration, cfg, SEED["qwen3_vl"], lm)

    # ---------------- one writer per checkpoint ----------------
    def qwen3_lm(self, path: Path):
        from transformers import Qwen3Config, Qwen3ForCausalLM
        model = self._init(Qwen3ForCausalLM, Qwen3Config(**QWEN3), 0)
        model.load_state_dict(self.qwen3_theta0)
        self._save_hf(model.to(self.dtype), path, qwen_tokenizer(QWEN3_EXTRA), [99, 97], 97)

    def _qwen2_5_vl_processor(self):
        from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor
        return qwen_vl_processor(Qwen2_5_VLProcessor, QWEN25_EXTRA, Qwen2VLVideoProcessor)

    def qwen2_5_vl(self, path: Path):
        self._save_hf(self.qwen2_5_vl_model, path, self._qwen2_5_vl_processor(), [99, 97], 97)

    def qwen2_5_vl_tf5(self, path: Path):
        self._save_hf(self.qwen2_5_vl_model, path, self._qwen2_5_vl_processor(), [99, 97], 97,
                      save_original_format=False)

    def qwen3_vl(self, path: Path):
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor
        proc = qwen_vl_processor(Qwen3VLProcessor, QWEN3_EXTRA, Qwen3VLVideoProcessor, side=64, patch=16)
        self._save_hf(self.qwen3_vl_model, path, proc, [99, 97], 97)

    def internvl_hf(self, path: Path):
        from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor
        tok = qwen_tokenizer(QWEN25_EXTRA + INTERNVL_EXTRA, "<IMG_CONTEXT>\n", "<|video_pad|>\n", INTERNVL_TOKENS)
        size = {"height": 56, "width": 56}
        proc = InternVLProcessor(image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False),
                                 video_processor=InternVLVideoProcessor(size=size), tokenizer=tok, image_seq_length=4,
                                 chat_template=tok.chat_template)
        self._save_hf(self.internvl_model, path, proc, [99, 97], 97)  # the OpenGVLab -hf (4.52) layout

    def internvl3(self, path: Path):
        """The internvl_hf model as OpenGVLab's InternVL3 repo holds it (InternVLChatModel's names and config)."""
        m = self.internvl_model
        _save_safetensors(_internvl_remote(m.state_dict()), path / "model.safetensors", self.dtype)
        text, vision = m.config.text_config, m.config.vision_config
        llm = {**text.to_diff_dict(), "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
               "vocab_size": text.vocab_size, "hidden_size": text.hidden_size}
        _save_json({"architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "llm_config": llm,
                    "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                                 "AutoModel": "modeling_internvl_chat.InternVLChatModel"},
                    "vision_config": {"architectures": ["InternVisionModel"], "model_type": "intern_vit_6b",
                                      "hidden_size": vision.hidden_size, "intermediate_size": vision.intermediate_size,
                                      "num_hidden_layers": vision.num_hidden_layers, "qkv_bias": True,
                                      "num_attention_heads": vision.num_attention_heads, "image_size": 56,
                                      "patch_size": 14, "norm_type": "layer_norm", "hidden_act": "gelu"},
                    "downsample_ratio": 0.5, "force_image_size": 56, "ps_version": "v2", "select_layer": -1,
                    "template": "internvl2_5", "tie_word_embeddings": False,
                    "torch_dtype": str(self.dtype).removeprefix("torch.")}, path / "config.json")
        qwen_tokenizer(QWEN25_EXTRA + INTERNVL_EXTRA, "<image>\n").save_pretrained(path)

    def llava_ov_1_5(self, path: Path):
        """LLaVA-OneVision-1.5 as its repo holds it: Qwen3 LM = θ0 + "training", random RICE ViT and merger."""
        from transformers import Qwen3Config
        sd = _derive(self.qwen3_theta0, SEED["llava_ov_1_5"], trained_rows=len(QWEN_VOCAB + QWEN3_EXTRA))
        h, heads, depth = 32, 2, 2
        sd.update(_random(_rice_vit_shapes(h, depth, QWEN3["hidden_size"], heads), SEED["llava_ov_1_5"] + 100))
        _save_safetensors(sd, path / "model.safetensors", self.dtype)
        text = {**Qwen3Config(**QWEN3).to_diff_dict(), "model_type": "LLaVAOneVision1_5_text"}
        _save_json({"architectures": ["LLaVAOneVision1_5_ForConditionalGeneration"], "model_type": "llavaonevision1_5",
                    "auto_map": {"AutoConfig": "configuration_llavaonevision1_5.Llavaonevision1_5Config",
                                 "AutoModelForCausalLM":
                                     "modeling_llavaonevision1_5.LLaVAOneVision1_5_ForConditionalGeneration"},
                    "text_config": text, **_vision_ids(QWEN3_EXTRA),
                    "vision_config": {"model_type": "rice_vit", "depth": depth, "embed_dim": h, "hidden_size": h,
                                      "intermediate_size": 2 * h, "num_heads": heads, "patch_size": 14,
                                      "spatial_merge_size": 2, "text_hidden_size": QWEN3["hidden_size"],
                                      "in_channels": 3, "hidden_act": "gelu"},
                    "torch_dtype": str(self.dtype).removeprefix("torch.")}, path / "config.json")
        qwen_tokenizer(QWEN3_EXTRA, *VISION_TOKENS).save_pretrained(path)
