"""CogVLM-chat (THUDM/cogvlm-chat-hf) for transformers 5: a visual-expert LLaMA and an EVA2-CLIP-E vision tower.

Written from the architecture description (CogVLM paper; the hub's remote code read for reference) with the
released parameter names, so a cogvlm-chat-hf folder loads with `CogVLMForCausalLM.from_pretrained` unchanged:

* language model `model.layers.N`: per token either the language or the vision expert (fused q|k|v
  `*_expert_query_key_value`, output `*_expert_dense`, SwiGLU `mlp.{language,vision}_mlp`); norms are shared.
  A position is routed to the vision expert only if it and the next position are image positions, so the EOI
  slot uses the language expert.
* positions: BOS, BOI, all image patches (one shared position), EOI, then text (`build_position_ids`).
* vision `model.vision`: conv patch embedding + CLS + learned positions, post-sub-layer-norm transformer
  (`transformer.layers.N.{attention,mlp,input_layernorm,post_attention_layernorm}`), GLU projector `linear_proj`,
  learned `boi` / `eoi` around the (image_size/patch)^2 patch features.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..base import PortGenerationMixin, PortPreTrainedModel, init
from ..common import (CACHE_FIELD, GatedMLP, RMSNorm, apply_rotary, attend, cached_length, resolve_cache, rotary,
                      to_weight)
from .configuration import LANGUAGE_TOKEN_TYPE, VISION_TOKEN_TYPE, CogVLMConfig
from .processing import build_conversation_input_ids


# ---------------------------------------------------------------- vision tower (EVA2-CLIP-E) ----------------------
class PatchEmbedding(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.proj = nn.Conv2d(v["in_channels"], v["hidden_size"], v["patch_size"], v["patch_size"])
        self.cls_embedding = nn.Parameter(torch.zeros(1, v["hidden_size"]))
        self.position_embedding = nn.Embedding(v["num_positions"], v["hidden_size"])

    def forward(self, images):
        x = self.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_embedding.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        # through the module, not .weight: an offloaded embedding's weight is only loaded by its own forward hook
        return x + self.position_embedding(torch.arange(x.shape[1], device=x.device))[None]


class VisionAttention(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.num_heads = v["num_heads"]
        self.query_key_value = nn.Linear(v["hidden_size"], 3 * v["hidden_size"])
        self.dense = nn.Linear(v["hidden_size"], v["hidden_size"])

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.query_key_value(x).view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # q|k|v blocks
        return self.dense(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1))


class VisionMLP(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        from transformers.activations import ACT2FN
        self.act = ACT2FN[v["hidden_act"]]
        self.fc1 = nn.Linear(v["hidden_size"], v["intermediate_size"])
        self.fc2 = nn.Linear(v["intermediate_size"], v["hidden_size"])

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VisionLayer(nn.Module):
    """EVA2-CLIP-E block: the norms apply to each sub-layer's output before the residual add."""

    def __init__(self, v: dict):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])
        self.attention = VisionAttention(v)
        self.mlp = VisionMLP(v)
        self.post_attention_layernorm = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])

    def forward(self, x):
        x = x + self.input_layernorm(self.attention(x))
        return x + self.post_attention_layernorm(self.mlp(x))


class VisionTransformer(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(v) for _ in range(v["num_hidden_layers"]))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class GLU(nn.Module):
    """Projector to the LM width: linear, LayerNorm + GELU, then a SwiGLU block."""

    def __init__(self, config: CogVLMConfig, in_features: int):
        super().__init__()
        h, f = config.hidden_size, config.intermediate_size
        self.linear_proj = nn.Linear(in_features, h, bias=False)
        self.norm1 = nn.LayerNorm(h)
        self.gate_proj = nn.Linear(h, f, bias=False)
        self.dense_h_to_4h = nn.Linear(h, f, bias=False)
        self.dense_4h_to_h = nn.Linear(f, h, bias=False)

    def forward(self, x):
        x = F.gelu(self.norm1(self.linear_proj(x)))
        return self.dense_4h_to_h(F.silu(self.gate_proj(x)) * self.dense_h_to_4h(x))


class EVA2CLIPModel(nn.Module):
    def __init__(self, config: CogVLMConfig):
        super().__init__()
        v = config.vision_config
        self.patch_embedding = PatchEmbedding(v)
        self.transformer = VisionTransformer(v)
        self.linear_proj = GLU(config, in_features=v["hidden_size"])
        self.boi = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.eoi = nn.Parameter(torch.zeros(1, 1, config.hidden_size))

    def forward(self, images):
        x = self.linear_proj(self.transformer(self.patch_embedding(images))[:, 1:])  # drop CLS
        b = x.shape[0]
        return torch.cat([self.boi.expand(b, -1, -1), x, self.eoi.expand(b, -1, -1)], dim=1)


# ---------------------------------------------------------------- language model with visual experts --------------
def vision_expert_mask(token_type_ids: torch.Tensor) -> torch.Tensor:
    """True where the vision expert applies: this and the next position are image positions."""
    mask = torch.zeros_like(token_type_ids, dtype=torch.bool)
    mask[:, :-1] = (token_type_ids[:, :-1] == VISION_TOKEN_TYPE) & (token_type_ids[:, 1:] == VISION_TOKEN_TYPE)
    return mask


def route(x: torch.Tensor, vision: torch.Tensor, vision_fn, language_fn, out_features: int) -> torch.Tensor:
    """vision_fn on the positions marked in `vision`, language_fn on the others."""
    if not vision.any():
        return language_fn(x)
    out = x.new_empty(*x.shape[:-1], out_features)
    out[vision] = vision_fn(x[vision])
    out[~vision] = language_fn(x[~vision])
    return out


def build_position_ids(token_type_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Position ids as cogvlm-chat-hf builds them: BOI and EOI count as text; every patch between them shares
    one position; padding (attention_mask 0) does not advance."""
    tmp = token_type_ids.clone()
    if attention_mask is not None:
        tmp[~attention_mask.bool()] = -1
    vis, lang = tmp == VISION_TOKEN_TYPE, tmp == LANGUAGE_TOKEN_TYPE
    edge = torch.zeros_like(vis)
    edge[:, 1:] |= vis[:, 1:] & lang[:, :-1]
    edge[:, 0] |= vis[:, 0]
    edge[:, :-1] |= vis[:, :-1] & lang[:, 1:]
    edge[:, -1] |= vis[:, -1]
    tmp[edge] = LANGUAGE_TOKEN_TYPE
    vis, lang = tmp == VISION_TOKEN_TYPE, tmp == LANGUAGE_TOKEN_TYPE
    step = torch.zeros_like(tmp)
    step[:, 1:] = (lang[:, 1:] | (vis[:, 1:] & lang[:, :-1])).long()
    # a left-padded row starts at 0 like the same prompt alone (the original counts its first token as 1): a batched
    # answer then equals the one-at-a-time answer
    step[:, 1:] &= (tmp[:, :-1] != -1).long()
    return step.cumsum(-1)


class VisionExpertAttention(nn.Module):
    def __init__(self, config: CogVLMConfig, layer_idx: int):
        super().__init__()
        h = config.hidden_size
        self.layer_idx, self.hidden_size, self.num_heads = layer_idx, h, config.num_attention_heads
        self.head_dim, self.rope_theta = h // self.num_heads, config.rope_theta
        self.vision_expert_query_key_value = nn.Linear(h, 3 * h, bias=False)
        self.vision_expert_dense = nn.Linear(h, h, bias=False)
        self.language_expert_query_key_value = nn.Linear(h, 3 * h, bias=False)
        self.language_expert_dense = nn.Linear(h, h, bias=False)

    def forward(self, x, vision, position_ids, attention_mask, cache):
        b, n, _ = x.shape
        qkv = route(x, vision, self.vision_expert_query_key_value, self.language_expert_query_key_value,
                    3 * self.hidden_size)
        q, k, v = (t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2) for t in qkv.split(self.hidden_size, -1))
        cos, sin = rotary(position_ids, self.head_dim, self.rope_theta, q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        ctx = attend(q, k, v, attention_mask).transpose(1, 2).reshape(b, n, self.hidden_size)
        return route(ctx, vision, self.vision_expert_dense, self.language_expert_dense, self.hidden_size)


class VisionExpertMLP(nn.Module):
    def __init__(self, config: CogVLMConfig):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.language_mlp = GatedMLP(config.hidden_size, config.intermediate_size)
        self.vision_mlp = GatedMLP(config.hidden_size, config.intermediate_size)

    def forward(self, x, vision):
        return route(x, vision, self.vision_mlp, self.language_mlp, self.hidden_size)


class CogVLMDecoderLayer(nn.Module):
    def __init__(self, config: CogVLMConfig, layer_idx: int):
        super().__init__()
        self.self_attn = VisionExpertAttention(config, layer_idx)
        self.mlp = VisionExpertMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, scale_in_fp32=True)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, scale_in_fp32=True)

    def forward(self, x, vision, position_ids, attention_mask, cache):
        vision, position_ids = vision.to(x.device), position_ids.to(x.device)  # device_map splits
        x = x + self.self_attn(self.input_layernorm(x), vision, position_ids, attention_mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x), vision)


class CogVLMPreTrainedModel(PortPreTrainedModel):
    config_class = CogVLMConfig
    _no_split_modules = ["CogVLMDecoderLayer", "VisionLayer"]

    def _init_port_weights(self, module, std):
        if isinstance(module, EVA2CLIPModel):
            init.zeros_(module.boi)
            init.zeros_(module.eoi)
        elif isinstance(module, PatchEmbedding):
            init.zeros_(module.cls_embedding)


class CogVLMModel(CogVLMPreTrainedModel):
    def __init__(self, config: CogVLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(CogVLMDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, scale_in_fp32=True)
        self.vision = EVA2CLIPModel(config)
        self.post_init()

    def encode_images(self, images) -> torch.Tensor:
        """(n_images, num_image_positions, hidden): BOI, patch features, EOI."""
        w = self.vision.patch_embedding.proj.weight
        return self.vision(to_weight(images, w, w.dtype))

    def forward(self, input_ids=None, images=None, token_type_ids=None, attention_mask=None, position_ids=None,
                cache=None, inputs_embeds=None, use_cache=False):
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        is_image = token_type_ids == VISION_TOKEN_TYPE
        if is_image.any():
            if images is None:
                raise ValueError("token_type_ids mark image positions but no images were given")
            feats = self.encode_images(_stack_images(images)).flatten(0, 1)
            if feats.shape[0] != int(is_image.sum()):
                raise ValueError(f"{int(is_image.sum())} image positions in token_type_ids but the images give "
                                 f"{feats.shape[0]} features ({self.config.num_image_positions} per image)")
            inputs_embeds = inputs_embeds.index_put([is_image.to(inputs_embeds.device)],
                                                    feats.to(inputs_embeds.device, inputs_embeds.dtype))
        if position_ids is None:  # a continuation without position_ids: one past the cached length
            past = cached_length(cache)
            position_ids = (build_position_ids(token_type_ids, attention_mask) if past == 0 else
                            torch.arange(past, past + inputs_embeds.shape[1], device=inputs_embeds.device)[None])
        vision = vision_expert_mask(token_type_ids)
        x = inputs_embeds
        for layer in self.layers:
            x = layer(x, vision, position_ids, attention_mask, cache)
        return self.norm(x)


def _stack_images(images) -> torch.Tensor:
    """A (B, 3, H, W) tensor, or the original's list of per-sample image lists (empty for text-only samples)."""
    if isinstance(images, torch.Tensor):
        return images if images.dim() == 4 else images[None]
    flat = [img for sample in images for img in (sample if isinstance(sample, (list, tuple)) else [sample])]
    return torch.stack(flat)


class CogVLMForCausalLM(CogVLMPreTrainedModel, PortGenerationMixin):
    def __init__(self, config: CogVLMConfig):
        super().__init__(config)
        self.model = CogVLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, images=None, token_type_ids=None, attention_mask=None, position_ids=None,
                cache=None, past_key_values=None, inputs_embeds=None, use_cache=None, labels=None,
                logits_to_keep: int = 0, **kwargs):
        use_cache = self.config.use_cache if use_cache is None else use_cache
        cache = resolve_cache(cache, past_key_values, use_cache, self.config)
        hidden = self.model(input_ids, images, token_type_ids, attention_mask, position_ids, cache, inputs_embeds,
                            use_cache)
        return self.lm_output(hidden, cache, use_cache, labels, logits_to_keep)

    # -- generation ----------------------------------------------------------------------------------------------
    def _prepare_attention_mask_for_generation(self, inputs_tensor, *args, **kwargs):
        # image placeholders use the pad id: they are not padding
        return torch.ones(inputs_tensor.shape[:2], dtype=torch.long, device=inputs_tensor.device)

    def prepare_inputs_for_generation(self, input_ids, cache=None, past_key_values=None, attention_mask=None,
                                      token_type_ids=None, images=None, use_cache=True, **kwargs):
        cache = cache if cache is not None else past_key_values
        done = cached_length(cache)
        tt = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        if tt.shape[1] < input_ids.shape[1]:  # generated tokens are text
            tt = torch.cat([tt, tt.new_zeros(tt.shape[0], input_ids.shape[1] - tt.shape[1])], dim=1)
        tt = tt[:, : input_ids.shape[1]]
        pos = build_position_ids(tt, attention_mask)
        return {"input_ids": input_ids[:, done:], "token_type_ids": tt[:, done:], "position_ids": pos[:, done:],
                "images": images if done == 0 else None, "attention_mask": attention_mask, CACHE_FIELD: cache,
                "use_cache": use_cache, "logits_to_keep": 1 if use_cache else 0}

    # -- inputs as the original builds them --------------------------------------------------------------------------
    def build_conversation_input_ids(self, tokenizer, *, query: str, history=None, images=None,
                                     template_version: str | None = None) -> dict:
        return build_conversation_input_ids(self.config, tokenizer, query=query, history=history, images=images,
                                            template_version=template_version)
