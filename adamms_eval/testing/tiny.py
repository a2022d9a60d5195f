"""A zoo of tiny random checkpoints in the real on-disk layouts, all derived from one base LM θ0 per family.

* Qwen2 family (hidden 64, 2 layers, GQA 4/2, qkv bias): ``qwen2_lm`` = θ0; ``qwen2_vl`` / ``qwen2_vl_tf5`` = θ0 + A
  (release layout / transformers-5 layout); ``llava_ov_hf`` / ``llava_ov_orig`` = θ0 + B with 192 embedding rows
  (llava-hf port / lmms-lab layout).
* LLaMA family (hidden 64, 2 layers, MHA, vocab 96 standing in for Vicuna's 32000): ``llama_lm`` = θ0;
  ``llava15_hf`` = θ0 + C with 128 rows; ``llava15_orig`` (liuhaotian layout: sharded .bin, no vision tower, 96 rows);
  ``cogvlm`` (language expert = θ0 + D); ``mplug_owl2`` (multiway.0 = θ0 + E). These two are saved through our
  ports (adamms_eval.ports) in the released layouts, with a LLaMA tokenizer and a greedy generation config
  (mPLUG-Owl2 also with its CLIP image processor config).
* The current pairs (Qwen2.5-VL, InternVL3 in both layouts, Qwen3-VL, LLaVA-OneVision-1.5, θ0 ``qwen3_lm``): see
  ``tiny_current``; the parts all builders share are in ``tiny_parts``.

θ0 is the seeded random init of the transformers class with norms set to 1 + noise. Embedding / lm_head rows past
a model's tokenizer stay as in θ0 (untrained), or keep the MLLM's random init where θ0 has no such row. Checkpoints
of a transformers class ship a byte-level BPE tokenizer, a processor with a chat template and a greedy generation
config, so ``AutoProcessor`` + ``AutoModelForImageTextToText`` + ``generate()`` run offline.

    build_zoo(out_dir, names=None, dtype=torch.float32) -> {name: Path}
    python -m adamms_eval.testing.tiny OUT_DIR [names...]
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import torch

from .tiny_current import CURRENT_NAMES, CurrentPairs, qwen_vl_processor
from .tiny_parts import (LLAMA, NOISE, ORIG_LLAVA, QWEN, BuilderBase, _derive, _flat_config, _gen, _layernorm, _linear,
                         _noise, _plain, _random, _rename, _save_json, _save_safetensors, _vit_block)
from .tokenizers import (LLAVA15_EXTRA, OV_EXTRA, QWEN2VL_EXTRA, QWEN_VOCAB, llama_tokenizer, qwen_tokenizer,
                         vicuna_tokenizer)

NAMES = ("qwen2_lm", "qwen2_vl", "qwen2_vl_tf5", "llava_ov_hf", "llava_ov_orig",
         "llama_lm", "llava15_hf", "llava15_orig", "cogvlm", "mplug_owl2") + CURRENT_NAMES
__all__ = ["NAMES", "NOISE", "build_zoo", "main"]
SEED = {"qwen_theta0": 0, "llama_theta0": 1, "qwen2_vl": 11, "llava_ov": 12, "llava15": 13, "cogvlm": 14, "mplug": 15}
PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56]]

_MM = dict(mm_hidden_size=32, mm_projector_type="mlp2x_gelu", mm_vision_select_feature="patch",
           mm_use_im_start_end=False, mm_use_im_patch_token=False, use_mm_proj=True)  # LLaVA-code config fields


class _Builder(CurrentPairs, BuilderBase):
    """One method per checkpoint name; the models behind two layouts are built once per build_zoo call."""

    @cached_property
    def qwen_theta0(self) -> dict:
        from transformers import Qwen2Config, Qwen2ForCausalLM
        return self._theta0(Qwen2ForCausalLM, Qwen2Config(**QWEN), SEED["qwen_theta0"])

    @cached_property
    def llama_theta0(self) -> dict:
        from transformers import LlamaConfig, LlamaForCausalLM
        return self._theta0(LlamaForCausalLM, LlamaConfig(**LLAMA), SEED["llama_theta0"])

    @cached_property
    def qwen2_vl_model(self):
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
        ids = {t: len(QWEN_VOCAB) + i for i, t in enumerate(QWEN2VL_EXTRA)}
        cfg = Qwen2VLConfig(
            text_config=dict(QWEN, rope_parameters=dict(QWEN["rope_parameters"], mrope_section=[2, 3, 3])),
            vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=False)
        lm = _derive(self.qwen_theta0, SEED["qwen2_vl"], trained_rows=len(QWEN_VOCAB + QWEN2VL_EXTRA))
        return self._mllm(Qwen2VLForConditionalGeneration, cfg, SEED["qwen2_vl"], lm)

    @cached_property
    def llava_ov_model(self):
        from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
        cfg = LlavaOnevisionConfig(
            text_config=dict(QWEN, model_type="qwen2", vocab_size=192),  # 128 + 2 added, padded to a multiple of 64
            vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14,
                               vision_use_head=False),
            image_token_index=100, video_token_index=101, vision_feature_layer=-1, tie_word_embeddings=False,
            vision_feature_select_strategy="full", image_grid_pinpoints=PINPOINTS, vision_aspect_ratio="anyres_max_9")
        lm = _derive(self.qwen_theta0, SEED["llava_ov"], trained_rows=len(QWEN_VOCAB + OV_EXTRA))
        return self._mllm(LlavaOnevisionForConditionalGeneration, cfg, SEED["llava_ov"], lm)

    @cached_property
    def llava15_model(self):
        from transformers import LlavaConfig, LlavaForConditionalGeneration
        cfg = LlavaConfig(
            text_config=dict(LLAMA, model_type="llama", vocab_size=128, pad_token_id=97),  # 96 + 2, padded to 64
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14,
                               projection_dim=32),
            image_token_index=96, image_seq_length=4, vision_feature_layer=-2,
            vision_feature_select_strategy="default", tie_word_embeddings=False)
        lm = _derive(self.llama_theta0, SEED["llava15"])
        return self._mllm(LlavaForConditionalGeneration, cfg, SEED["llava15"], lm)

    def qwen2_lm(self, path):
        from transformers import Qwen2Config, Qwen2ForCausalLM
        model = self._init(Qwen2ForCausalLM, Qwen2Config(**QWEN), 0)
        model.load_state_dict(self.qwen_theta0)
        self._save_hf(model.to(self.dtype), path, qwen_tokenizer([]), [99, 97], 97)

    def _qwen2_vl_processor(self):
        from transformers import Qwen2VLProcessor, Qwen2VLVideoProcessor
        return qwen_vl_processor(Qwen2VLProcessor, QWEN2VL_EXTRA, Qwen2VLVideoProcessor)

    def qwen2_vl(self, path):
        self._save_hf(self.qwen2_vl_model, path, self._qwen2_vl_processor(), [99, 97], 97)

    def qwen2_vl_tf5(self, path):
        self._save_hf(self.qwen2_vl_model, path, self._qwen2_vl_processor(), [99, 97], 97,
                      save_original_format=False)  # the in-memory layout model.language_model.* / model.visual.*

    def llava_ov_hf(self, path):
        from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor
        tok, size = qwen_tokenizer(OV_EXTRA, "<image>\n", "<video>\n"), {"height": 28, "width": 28}
        proc = LlavaOnevisionProcessor(
            image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=PINPOINTS),
            video_processor=LlavaOnevisionVideoProcessor(size=size), tokenizer=tok, num_image_tokens=4,
            vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9", chat_template=tok.chat_template)
        self._save_hf(self.llava_ov_model, path, proc, [99, 97], 97, hub_vision=True)

    def llava_ov_orig(self, path):
        m = self.llava_ov_model
        _save_safetensors(_rename(m.state_dict(), ORIG_LLAVA), path / "model.safetensors", self.dtype)
        _save_json(_flat_config(m.config.text_config, "LlavaQwenForCausalLM", "llava", self.dtype, **_MM,
                                max_window_layers=2, use_sliding_window=False, image_aspect_ratio="anyres_max_9",
                                image_grid_pinpoints=PINPOINTS, mm_patch_merge_type="spatial_unpad",
                                mm_vision_select_layer=-1, mm_vision_tower="google/siglip-so400m-patch14-384"),
                   path / "config.json")

    def llama_lm(self, path):
        from transformers import LlamaConfig, LlamaForCausalLM
        model = self._init(LlamaForCausalLM, LlamaConfig(**LLAMA), 0)
        model.load_state_dict(self.llama_theta0)
        self._save_hf(model.to(self.dtype), path, llama_tokenizer([]), 2, 0)

    def llava15_hf(self, path):
        from transformers import CLIPImageProcessor, LlavaProcessor
        tok = llama_tokenizer(LLAVA15_EXTRA, "<image>\n", pad_token="<pad>")
        proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 28},
                                                                 crop_size={"height": 28, "width": 28}),
                              tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                              num_additional_image_tokens=1, chat_template=tok.chat_template)
        self._save_hf(self.llava15_model, path, proc, 2, 97, hub_vision=True)

    def llava15_orig(self, path):
        m = self.llava15_model
        sd = _plain(_rename(m.state_dict(), [(r"^model\.vision_tower\.", None)] + ORIG_LLAVA), self.dtype)
        for k in ("model.embed_tokens.weight", "lm_head.weight"):
            sd[k] = sd[k][:96].clone()  # released without CLIP weights and without <image>/<pad> rows
        first = [k for k in sd if k.startswith(("model.embed_tokens.", "model.layers.0."))]
        index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())}, "weight_map": {}}
        for i, shard in enumerate([first, [k for k in sd if k not in first]], 1):
            file = f"pytorch_model-{i:05d}-of-00002.bin"
            torch.save({k: sd[k] for k in shard}, path / file)
            index["weight_map"].update(dict.fromkeys(shard, file))
        _save_json(index, path / "pytorch_model.bin.index.json")
        _save_json(_flat_config(m.config.text_config, "LlavaLlamaForCausalLM", "llava", self.dtype, **_MM,
                                vocab_size=96, pad_token_id=0, image_aspect_ratio="pad", mm_vision_select_layer=-2,
                                mm_vision_tower="openai/clip-vit-large-patch14-336"),
                   path / "config.json")

    def cogvlm(self, path):
        from transformers import LlamaConfig
        lm, g = _derive(self.llama_theta0, SEED["cogvlm"]), _gen(SEED["cogvlm"] + 100)
        sd = {k: lm[k] for k in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")}
        for i in range(LLAMA["num_hidden_layers"]):  # vision expert = language expert + "training"
            p = f"model.layers.{i}."
            qkv = torch.cat([lm[f"{p}self_attn.{x}_proj.weight"] for x in "qkv"])
            dense = lm[f"{p}self_attn.o_proj.weight"]
            sd.update({f"{p}self_attn.language_expert_query_key_value.weight": qkv,
                       f"{p}self_attn.language_expert_dense.weight": dense,
                       f"{p}self_attn.vision_expert_query_key_value.weight": _noise(qkv, g),
                       f"{p}self_attn.vision_expert_dense.weight": _noise(dense, g)})
            for x in ("input_layernorm", "post_attention_layernorm"):
                sd[f"{p}{x}.weight"] = lm[f"{p}{x}.weight"]
            for x in ("gate_proj", "up_proj", "down_proj"):
                sd[f"{p}mlp.language_mlp.{x}.weight"] = lm[f"{p}mlp.{x}.weight"]
                sd[f"{p}mlp.vision_mlp.{x}.weight"] = _noise(lm[f"{p}mlp.{x}.weight"], g)
        h, d, f = 32, LLAMA["hidden_size"], LLAMA["intermediate_size"]  # tiny EVA2-CLIP: 28 px, patch 14 -> 4 + cls
        shapes = {"patch_embedding.proj.weight": (h, 3, 14, 14), "patch_embedding.proj.bias": (h,),
                  "patch_embedding.cls_embedding": (1, h), "patch_embedding.position_embedding.weight": (5, h),
                  **_linear("linear_proj.linear_proj", d, h, bias=False), **_layernorm("linear_proj.norm1", d),
                  **_linear("linear_proj.gate_proj", f, d, bias=False),
                  **_linear("linear_proj.dense_h_to_4h", f, d, bias=False),
                  **_linear("linear_proj.dense_4h_to_h", d, f, bias=False), "boi": (1, 1, d), "eoi": (1, 1, d)}
        for i in range(2):
            shapes.update(_vit_block(f"transformer.layers.{i}.", h, "attention"))
        sd.update({f"model.vision.{k}": v for k, v in _random(shapes, SEED["cogvlm"] + 200).items()})
        vision = dict(dropout_prob=0.0, hidden_act="gelu", hidden_size=h, image_size=28, in_channels=3,
                      intermediate_size=2 * h, layer_norm_eps=1e-6, num_heads=2, num_hidden_layers=2, num_positions=5,
                      patch_size=14)
        cfg = _flat_config(LlamaConfig(**LLAMA), "CogVLMForCausalLM", "cogvlm", self.dtype, pad_token_id=0,
                           template_version="chat", vision_config=vision,
                           auto_map={"AutoConfig": "configuration_cogvlm.CogVLMConfig",
                                     "AutoModelForCausalLM": "modeling_cogvlm.CogVLMForCausalLM"})
        del cfg["num_key_value_heads"]  # CogVLM v1 is MHA and its config.json has no such field
        from ..ports import CogVLMConfig, CogVLMForCausalLM
        # the real checkpoint ships no tokenizer (it uses Vicuna's); the tiny one carries its LLaMA tokenizer
        self._save_port(CogVLMForCausalLM, CogVLMConfig, cfg, sd, path, vicuna_tokenizer())

    def mplug_owl2(self, path):
        from transformers import LlamaConfig
        lm, g = _derive(self.llama_theta0, SEED["mplug"]), _gen(SEED["mplug"] + 100)
        sd = {}
        for k, v in lm.items():  # modality-adaptive k/v/norms: multiway.0 = text, multiway.1 = vision (= text + noise)
            if re.search(r"\.(self_attn\.[kv]_proj|input_layernorm|post_attention_layernorm)\.weight$", k):
                base = k.removesuffix(".weight")
                sd[f"{base}.multiway.0.weight"], sd[f"{base}.multiway.1.weight"] = v, _noise(v, g)
            else:
                sd[k] = v
        h, d, q = 32, LLAMA["hidden_size"], 8  # tiny ViT (28 px, patch 14 -> 4 + cls), 8 learnable queries
        shapes = {"vision_model.embeddings.cls_token": (1, 1, h), "vision_model.embeddings.patch_embed.weight":
                  (h, 3, 14, 14), "vision_model.embeddings.position_embedding": (1, 5, h),
                  **_layernorm("vision_model.embeddings.pre_layernorm", h),
                  **_layernorm("vision_model.post_layernorm", h),
                  "visual_abstractor.query_embeds": (1, q, h), **_linear("visual_abstractor.visual_fc", d, h),
                  "visual_abstractor.vit_eos": (1, 1, d)}
        for i in range(2):
            shapes.update(_vit_block(f"vision_model.encoder.layers.{i}.", h, "self_attn"))
            p = f"visual_abstractor.encoder.layers.{i}.crossattention."
            for n in ("attention.query", "attention.key", "attention.value", "output.out_proj"):
                shapes.update(_linear(p + n, h, h))
            for n in ("norm1", "normk", "output.norm2"):
                shapes.update(_layernorm(p + n, h))
            shapes.update({**_linear(f"{p}output.mlp.w1", 2 * h, h), **_linear(f"{p}output.mlp.w2", h, 2 * h),
                           **_linear(f"{p}output.mlp.w3", 2 * h, h), **_layernorm(f"{p}output.mlp.ffn_ln", 2 * h)})
        # the abstractor's q_pos_embed / k_pos_embed are computed sin-cos tables the official converter leaves out
        sd.update({f"model.{k}": v for k, v in _random(shapes, SEED["mplug"] + 200).items()})
        visual = {"visual_model": dict(hidden_size=h, intermediate_size=2 * h, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=28, patch_size=14, hidden_act="quick_gelu",
                                       layer_norm_eps=1e-6, use_flash_attn=False),
                  "visual_abstractor": dict(num_learnable_queries=q, hidden_size=h, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=2 * h, layer_norm_eps=1e-6,
                                            encoder_hidden_size=h, grid_size=2)}
        cfg = _flat_config(LlamaConfig(**LLAMA), "MPLUGOwl2LlamaForCausalLM", "mplug_owl2", self.dtype,
                           pad_token_id=0, pretraining_tp=1, attention_bias=False, visual_config=visual)
        from transformers import CLIPImageProcessor
        from ..ports import MPLUGOwl2Config, MPLUGOwl2LlamaForCausalLM
        from ..ports.common import CLIP_MEAN, CLIP_STD
        self._save_port(MPLUGOwl2LlamaForCausalLM, MPLUGOwl2Config, cfg, sd, path,
                        vicuna_tokenizer(), bin_file=True)
        CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, resample=3,
                           image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(path)

    def _save_port(self, model_cls, config_cls, cfg: dict, sd: dict, path: Path, tokenizer, bin_file=False) -> None:
        """Load `sd` into our port class (strict: the released names and shapes) and save it from there, with
        a tokenizer, a greedy generation config and the released-style flat config.json."""
        from transformers import GenerationConfig
        model = model_cls(config_cls.from_dict(cfg)).eval()
        missing, unexpected = model.load_state_dict(sd, strict=False)
        computed = {name for name, _ in model.named_buffers()}  # made by the model, not stored in the release
        if unexpected or set(missing) - computed:
            raise KeyError(f"not the released names: missing {sorted(set(missing) - computed)}, "
                           f"unexpected {sorted(unexpected)}")
        if bin_file:  # mPLUG-Owl2 was released as pytorch_model*.bin, without its computed buffers
            torch.save(_plain({k: v for k, v in model.state_dict().items() if k in sd}, self.dtype),
                       path / "pytorch_model.bin")
            model.generation_config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=16,
                                                       bos_token_id=1, eos_token_id=2, pad_token_id=0)
            model.generation_config.save_pretrained(path)
            tokenizer.save_pretrained(path)
        else:
            self._save_hf(model.to(self.dtype), path, tokenizer, 2, 0)
        _save_json(cfg, path / "config.json")  # as released (save_pretrained wrote the class's full dict)


def build_zoo(out_dir: str | Path, names: Iterable[str] | None = None, dtype=torch.float32) -> dict[str, Path]:
    """Build the requested tiny checkpoints (all by default) into out_dir/<name>/; reuse those already there."""
    out_dir, names = Path(out_dir), list(NAMES if names is None else names)
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown tiny checkpoint(s) {unknown}; choose from {list(NAMES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    builder, paths = _Builder(dtype), {}
    for name in names:
        path = paths[name] = out_dir / name
        if (path / "config.json").is_file():
            continue
        tmp = out_dir / f".{name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        getattr(builder, name)(tmp)
        try:
            os.replace(tmp, path)  # atomic: a half-written checkpoint never looks finished
        except OSError:  # another process finished it first
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m adamms_eval.testing.tiny OUT_DIR [{' '.join(NAMES)}]")
        return 0 if argv else 2
    for name, path in build_zoo(argv[0], argv[1:] or None).items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
