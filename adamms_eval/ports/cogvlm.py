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
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel

from .common import (CACHE_FIELD, GatedMLP, RMSNorm, apply_rotary, attend, cached_length, causal_lm_loss, lm_output,
                     pil_to_tensor, resolve_cache, rotary, to_weight)

try:
    from transformers import initialization as init
except ImportError:  # older transformers: plain torch init
    from torch.nn import init

LANGUAGE_TOKEN_TYPE, VISION_TOKEN_TYPE = 0, 1
TEMPLATES = ("base", "chat", "vqa")
# cogvlm-chat-hf's published vision_config (EVA2-CLIP-E at 490 px)
VISION_DEFAULTS = dict(dropout_prob=0.0, hidden_act="gelu", hidden_size=1792, image_size=490, in_channels=3,
                       intermediate_size=15360, layer_norm_eps=1e-6, num_heads=16, num_hidden_layers=63,
                       num_positions=1226, patch_size=14)


class CogVLMConfig(PretrainedConfig):
    """cogvlm-chat-hf's config.json fields (a flat LLaMA config plus `vision_config` and `template_version`)."""
    model_type = "cogvlm"

    def __init__(self, vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, hidden_act="silu", max_position_embeddings=2048, initializer_range=0.02,
                 rms_norm_eps=1e-5, template_version="chat", vision_config=None, rope_theta=10000.0, use_cache=True,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, **kwargs):
        self.vocab_size, self.hidden_size, self.intermediate_size = vocab_size, hidden_size, intermediate_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.num_key_value_heads = num_attention_heads  # MHA (the released config has no such field)
        self.hidden_act, self.max_position_embeddings = hidden_act, max_position_embeddings
        self.initializer_range, self.rms_norm_eps, self.rope_theta = initializer_range, rms_norm_eps, rope_theta
        self.template_version, self.use_cache = template_version, use_cache
        self.vision_config = {**VISION_DEFAULTS, **(vision_config or {})}
        for unused in ("num_key_value_heads", "rope_scaling"):  # MHA, plain rotary: nothing to configure
            kwargs.pop(unused, None)
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def num_image_positions(self) -> int:
        """Image placeholder positions per image: (image_size / patch_size)^2 patches + BOI + EOI (1227 at 490 px)."""
        v = self.vision_config
        return (v["image_size"] // v["patch_size"]) ** 2 + 2


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


class CogVLMPreTrainedModel(PreTrainedModel):
    config_class = CogVLMConfig
    base_model_prefix = "model"
    _no_split_modules = ["CogVLMDecoderLayer", "VisionLayer"]
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]
    _supports_sdpa = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, EVA2CLIPModel):
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

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

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


class CogVLMForCausalLM(CogVLMPreTrainedModel, GenerationMixin):
    def __init__(self, config: CogVLMConfig):
        super().__init__(config)
        self.model = CogVLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids=None, images=None, token_type_ids=None, attention_mask=None, position_ids=None,
                cache=None, past_key_values=None, inputs_embeds=None, use_cache=None, labels=None,
                logits_to_keep: int = 0, **kwargs):
        use_cache = self.config.use_cache if use_cache is None else use_cache
        cache = resolve_cache(cache, past_key_values, use_cache, self.config)
        hidden = self.model(input_ids, images, token_type_ids, attention_mask, position_ids, cache, inputs_embeds,
                            use_cache)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(to_weight(hidden, self.lm_head.weight)).float()
        return lm_output(logits, cache, use_cache, causal_lm_loss(logits, labels))

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


def history_to_prompt(template_version: str, history, query: str) -> str:
    """CogVLM's templates: `base` = the query; `chat` = "Question: {q} Answer:"; `vqa` = "Question: {q} Short answer:";
    earlier turns as "Question: {q} Answer: {a}\\n"."""
    if template_version not in TEMPLATES:
        raise ValueError(f"unknown CogVLM template_version {template_version!r}; choose one of {', '.join(TEMPLATES)}")
    if template_version == "base":
        return query
    answer = "Short answer:" if template_version == "vqa" else "Answer:"
    past = "".join(f"Question: {q} {answer} {a}\n" for q, a in (history or []))
    return f"{past}Question: {query} {answer}"


def build_conversation_input_ids(config: CogVLMConfig, tokenizer, *, query: str, history=None, images=None,
                                 template_version: str | None = None) -> dict:
    """BOS, then (for one image) num_image_positions pad-id placeholders of token type 1, then the prompt's tokens.

    Returns 1-D `input_ids`, `token_type_ids`, `attention_mask` and `images` (a list with one (3, S, S) tensor,
    resized bicubic to the config's image_size with CLIP mean/std, or empty)."""
    if images is not None and len(images) > 1:
        raise ValueError("CogVLM takes at most one image per conversation")
    text = history_to_prompt(template_version or config.template_version, history, query)
    return encode_prompt(config, tokenizer, text, images)


def encode_prompt(config: CogVLMConfig, tokenizer, text: str, images=None) -> dict:
    """build_conversation_input_ids for an already templated text (scoring appends a continuation to it)."""
    ids, types, pixels = [tokenizer.bos_token_id], [LANGUAGE_TOKEN_TYPE], []
    if images:
        size = config.vision_config["image_size"]
        pixels = [pil_to_tensor(images[0], size)]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids += [pad] * config.num_image_positions
        types += [VISION_TOKEN_TYPE] * config.num_image_positions
    text_ids = tokenizer.encode(text, add_special_tokens=False)
    ids += text_ids
    types += [LANGUAGE_TOKEN_TYPE] * len(text_ids)
    return {"input_ids": torch.tensor(ids, dtype=torch.long), "token_type_ids": torch.tensor(types, dtype=torch.long),
            "attention_mask": torch.ones(len(ids), dtype=torch.long), "images": pixels}
