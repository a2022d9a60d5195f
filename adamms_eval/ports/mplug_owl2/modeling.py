"""mPLUG-Owl2 (MAGAer13/mplug-owl2-llama2-7b) for transformers 5, without patching transformers' LLaMA.

Written from the architecture description (mPLUG-Owl2 paper; X-PLUG/mPLUG-Owl read for reference) with the
released parameter names, so an mplug-owl2-llama2-7b folder loads with `MPLUGOwl2LlamaForCausalLM.from_pretrained`:

* language model: LLaMA-2 whose k_proj, v_proj and both layer norms are modality-adaptive
  (`*.multiway.0` for text, `*.multiway.1` for image positions, chosen per token by a modality indicator);
  q_proj, o_proj, the MLP and the final norm are shared. Old `rotary_emb.inv_freq` buffers are ignored on load.
* vision `model.vision_model`: a CLIP-L/14 style ViT at 448 px (fused query_key_value interleaved per head,
  QuickGELU MLP, pre-LN, post_layernorm on every token).
* `model.visual_abstractor`: learned queries cross-attending to [queries; image tokens] with sin-cos position
  embeddings, SwiGLU MLP with an inner LayerNorm, a linear map to the LM width and a learned `vit_eos` appended:
  num_learnable_queries + 1 (65) tokens spliced in place of the image token (id -200 in the input ids).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..base import PortGenerationMixin, PortPreTrainedModel, init
from ..common import CACHE_FIELD, GatedMLP, RMSNorm, apply_rotary, attend, cached_length, resolve_cache, rotary, to_weight
from .configuration import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX, MPLUGOwl2Config


# ---------------------------------------------------------------- vision tower -------------------------------------
class VisionEmbeddings(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        h, p = v["hidden_size"], v["patch_size"]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, h))
        self.patch_embed = nn.Conv2d(3, h, p, p, bias=False)
        self.position_embedding = nn.Parameter(torch.zeros(1, (v["image_size"] // p) ** 2 + 1, h))
        self.pre_layernorm = nn.LayerNorm(h, eps=v["layer_norm_eps"])

    def forward(self, pixels):
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return self.pre_layernorm(x + self.position_embedding[:, : x.shape[1]].to(x.dtype))


class VisionAttention(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.num_heads = v["num_attention_heads"]
        self.query_key_value = nn.Linear(v["hidden_size"], 3 * v["hidden_size"])
        self.dense = nn.Linear(v["hidden_size"], v["hidden_size"])

    def forward(self, x):
        b, n, _ = x.shape
        # rows are grouped per head as (q, k, v) — not q|k|v blocks as in CogVLM's tower
        q, k, v = self.query_key_value(x).view(b, n, self.num_heads, 3, -1).permute(3, 0, 2, 1, 4)
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


class VisionEncoderLayer(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])
        self.self_attn = VisionAttention(v)
        self.post_attention_layernorm = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])
        self.mlp = VisionMLP(v)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class VisionEncoder(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.layers = nn.ModuleList(VisionEncoderLayer(v) for _ in range(v["num_hidden_layers"]))


class VisionModel(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.embeddings = VisionEmbeddings(v)
        self.encoder = VisionEncoder(v)
        self.post_layernorm = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])

    def forward(self, pixels):
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


# ---------------------------------------------------------------- visual abstractor ---------------------------------
def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """MAE's 1-D sin-cos embedding: [sin(p·ω), cos(p·ω)], ω_i = 10000^(-2i/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2))
    out = positions.reshape(-1, 1).double() * omega
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_2d(dim: int, grid: int, cls_token: bool = True) -> torch.Tensor:
    """MAE's 2-D sin-cos embedding over a grid x grid patch grid (first half from rows, second from columns),
    with a zero row for the CLS token in front."""
    axis = torch.arange(grid, dtype=torch.float64, device="cpu")  # real values even under a meta-device init
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, xs), sincos_1d(dim // 2, ys)], dim=1)
    return torch.cat([torch.zeros(1, dim, device="cpu"), emb]) if cls_token else emb


class AbstractorMultiHeadAttention(nn.Module):
    def __init__(self, a: dict):
        super().__init__()
        h = a["hidden_size"]
        self.num_heads = a["num_attention_heads"]
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(a["encoder_hidden_size"], h)
        self.value = nn.Linear(a["encoder_hidden_size"], h)
        # computed sin-cos tables, not learned: the official converter leaves them out of the released checkpoint,
        # and transformers 5 builds the model on meta, so `_init_weights` recomputes them (`position_tables`)
        # unless the file has them (persistent, as in the original's state_dict)
        self.num_queries, self.grid_size = a["num_learnable_queries"], a["grid_size"]
        q_pos, k_pos = self.position_tables()
        self.register_buffer("q_pos_embed", q_pos)
        self.register_buffer("k_pos_embed", k_pos)

    def position_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(q_pos_embed, k_pos_embed) as the original computes them in `__init__`, on the CPU."""
        h = self.query.out_features
        return sincos_1d(h, torch.arange(self.num_queries, device="cpu")), sincos_2d(h, self.grid_size)

    def forward(self, queries, keys):
        """queries (B, Q, h); keys = [queries; image tokens] (B, Q + N, h)."""
        dtype = queries.dtype
        q_pos = self.q_pos_embed.to(dtype)[None]
        k_pos = torch.cat([self.q_pos_embed, self.k_pos_embed]).to(dtype)[None]

        def heads(t):
            return t.view(t.shape[0], t.shape[1], self.num_heads, -1).transpose(1, 2)
        ctx = F.scaled_dot_product_attention(heads(self.query(queries + q_pos)), heads(self.key(keys + k_pos)),
                                             heads(self.value(keys)))
        return ctx.transpose(1, 2).reshape(queries.shape)


class AbstractorMLP(nn.Module):
    def __init__(self, a: dict):
        super().__init__()
        h, f = a["hidden_size"], a["intermediate_size"]
        self.w1 = nn.Linear(h, f)
        self.w2 = nn.Linear(f, h)
        self.w3 = nn.Linear(h, f)
        self.ffn_ln = nn.LayerNorm(f, eps=a["layer_norm_eps"])

    def forward(self, x):
        return self.w2(self.ffn_ln(F.silu(self.w1(x)) * self.w3(x)))


class AbstractorCrossOutput(nn.Module):
    def __init__(self, a: dict):
        super().__init__()
        d = a["encoder_hidden_size"]
        self.out_proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = AbstractorMLP(a)

    def forward(self, ctx, residual):
        x = residual + self.out_proj(ctx)
        return x + self.mlp(self.norm2(x))


class AbstractorCrossAttention(nn.Module):
    def __init__(self, a: dict):
        super().__init__()
        self.attention = AbstractorMultiHeadAttention(a)
        self.output = AbstractorCrossOutput(a)
        self.norm1 = nn.LayerNorm(a["encoder_hidden_size"])
        self.normk = nn.LayerNorm(a["encoder_hidden_size"])

    def forward(self, queries, image_tokens):
        queries = self.norm1(queries)  # the residual below is taken after this norm, as in the original
        keys = torch.cat([queries, self.normk(image_tokens)], dim=1)
        return self.output(self.attention(queries, keys), queries)


class AbstractorLayer(nn.Module):
    def __init__(self, a: dict):
        super().__init__()
        self.crossattention = AbstractorCrossAttention(a)


class AbstractorEncoder(nn.Module):
    def __init__(self, a: dict):
        super().__init__()
        self.layers = nn.ModuleList(AbstractorLayer(a) for _ in range(a["num_hidden_layers"]))


class VisualAbstractor(nn.Module):
    def __init__(self, a: dict, language_hidden_size: int):
        super().__init__()
        self.encoder = AbstractorEncoder(a)
        self.visual_fc = nn.Linear(a["hidden_size"], language_hidden_size)
        self.query_embeds = nn.Parameter(torch.zeros(1, a["num_learnable_queries"], a["hidden_size"]))
        self.vit_eos = nn.Parameter(torch.zeros(1, 1, language_hidden_size))

    def forward(self, image_tokens):
        x = self.query_embeds.expand(image_tokens.shape[0], -1, -1).to(image_tokens.dtype)
        for layer in self.encoder.layers:
            x = layer.crossattention(x, image_tokens)
        x = self.visual_fc(x)
        return torch.cat([x, self.vit_eos.expand(x.shape[0], -1, -1).to(x.dtype)], dim=1)


# ---------------------------------------------------------------- modality-adaptive LLaMA ------------------------------
class MultiwayNetwork(nn.Module):
    """Two copies of a module: multiway.0 for text positions (indicator 0), multiway.1 for image positions."""

    def __init__(self, make):
        super().__init__()
        self.multiway = nn.ModuleList([make(), make()])

    def forward(self, x, indicators):
        if indicators is None:
            return self.multiway[0](x)
        image = indicators.to(x.device) == 1
        if not image.any():
            return self.multiway[0](x)
        out = self.multiway[0](x)  # text branch everywhere, then the image positions overwritten
        out[image] = self.multiway[1](x[image])
        return out


class MultiwayAttention(nn.Module):
    def __init__(self, config: MPLUGOwl2Config, layer_idx: int):
        super().__init__()
        h = config.hidden_size
        self.layer_idx, self.num_heads, self.head_dim = layer_idx, config.num_attention_heads, h // config.num_attention_heads
        self.rope_theta = config.rope_theta
        self.q_proj = nn.Linear(h, h, bias=False)
        self.k_proj = MultiwayNetwork(lambda: nn.Linear(h, h, bias=False))
        self.v_proj = MultiwayNetwork(lambda: nn.Linear(h, h, bias=False))
        self.o_proj = nn.Linear(h, h, bias=False)

    def forward(self, x, indicators, position_ids, attention_mask, cache):
        b, n, _ = x.shape

        def heads(t):
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x, indicators)), heads(self.v_proj(x, indicators))
        cos, sin = rotary(position_ids, self.head_dim, self.rope_theta, q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        return self.o_proj(attend(q, k, v, attention_mask).transpose(1, 2).reshape(b, n, -1))


class MPLUGOwl2DecoderLayer(nn.Module):
    def __init__(self, config: MPLUGOwl2Config, layer_idx: int):
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = MultiwayAttention(config, layer_idx)
        self.mlp = GatedMLP(h, config.intermediate_size)
        self.input_layernorm = MultiwayNetwork(lambda: RMSNorm(h, eps))
        self.post_attention_layernorm = MultiwayNetwork(lambda: RMSNorm(h, eps))

    def forward(self, x, indicators, position_ids, attention_mask, cache):
        position_ids = position_ids.to(x.device)
        x = x + self.self_attn(self.input_layernorm(x, indicators), indicators, position_ids, attention_mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x, indicators))


class MPLUGOwl2PreTrainedModel(PortPreTrainedModel):
    config_class = MPLUGOwl2Config
    _no_split_modules = ["MPLUGOwl2DecoderLayer", "VisionEncoderLayer", "AbstractorLayer"]
    # computed by _init_weights when absent, as in the release: not "newly initialized" weights to warn about
    _keys_to_ignore_on_load_missing = [r"crossattention\.attention\.[qk]_pos_embed$"]

    def _init_port_weights(self, module, std):
        if isinstance(module, VisionEmbeddings):
            init.normal_(module.cls_token, mean=0.0, std=std)
            init.normal_(module.position_embedding, mean=0.0, std=std)
        elif isinstance(module, VisualAbstractor):
            init.normal_(module.query_embeds, mean=0.0, std=std)
            init.normal_(module.vit_eos, mean=0.0, std=std)
        elif isinstance(module, AbstractorMultiHeadAttention):  # computed buffers (a no-op for ones loaded)
            q_pos, k_pos = module.position_tables()
            init.copy_(module.q_pos_embed, q_pos)
            init.copy_(module.k_pos_embed, k_pos)


class MPLUGOwl2LlamaModel(MPLUGOwl2PreTrainedModel):
    def __init__(self, config: MPLUGOwl2Config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(MPLUGOwl2DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.vision_model = VisionModel(config.visual_config["visual_model"])
        self.visual_abstractor = VisualAbstractor(config.visual_config["visual_abstractor"], config.hidden_size)
        self.post_init()

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n_images, num_learnable_queries + 1, hidden)."""
        w = self.vision_model.embeddings.patch_embed.weight
        return self.visual_abstractor(self.vision_model(to_weight(pixels, w, w.dtype)))

    def splice(self, input_ids, images, attention_mask=None, labels=None):
        """Embed the text and put each image's tokens where its IMAGE_TOKEN_INDEX stands (images in order of
        appearance); rows of different lengths are left-padded. Returns embeds, modality indicators, mask, labels."""
        feats = self.encode_images(images if images.dim() == 4 else images[None]) if images is not None else None
        rows, inds, labs, used = [], [], [], 0
        for b, ids in enumerate(input_ids):
            keep = attention_mask[b].bool() if attention_mask is not None else torch.ones_like(ids, dtype=torch.bool)
            ids, lab = ids[keep.to(ids.device)], (labels[b][keep] if labels is not None else None)
            pieces, ind, lp, start = [], [], [], 0
            for pos in (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist() + [len(ids)]:
                text = ids[start:pos]
                pieces.append(self.embed_tokens(text))
                ind.append(torch.zeros(len(text), dtype=torch.long))
                lp.append(lab[start:pos] if lab is not None else None)
                if pos < len(ids):
                    if feats is None or used >= len(feats):
                        raise ValueError("more image tokens in input_ids than images given")
                    f = feats[used].to(pieces[-1].device, pieces[-1].dtype)
                    used += 1
                    pieces.append(f)
                    ind.append(torch.ones(len(f), dtype=torch.long))
                    lp.append(torch.full((len(f),), -100, dtype=torch.long) if lab is not None else None)
                start = pos + 1
            rows.append(torch.cat(pieces))
            inds.append(torch.cat(ind))
            labs.append(torch.cat([x.to(input_ids.device) for x in lp]) if labels is not None else None)
        if feats is not None and used != len(feats):
            raise ValueError(f"{len(feats)} images given but {used} image tokens ({DEFAULT_IMAGE_TOKEN}) in input_ids")
        width = max(len(r) for r in rows)
        dev = rows[0].device
        embeds = torch.stack([F.pad(r, (0, 0, width - len(r), 0)) for r in rows])
        mask = torch.stack([F.pad(torch.ones(len(r), dtype=torch.long, device=dev), (width - len(r), 0)) for r in rows])
        indicators = torch.stack([F.pad(i, (width - len(i), 0)) for i in inds]).to(dev)
        out_labels = (torch.stack([F.pad(x, (width - len(x), 0), value=-100) for x in labs])
                      if labels is not None else None)
        return embeds, indicators, mask, out_labels

    def forward(self, inputs_embeds, modality_indicators, attention_mask, position_ids, cache):
        n = inputs_embeds.shape[1]
        if position_ids is None:
            if attention_mask is not None:  # left padding does not advance positions
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -n:]
            else:
                past = cached_length(cache)
                position_ids = torch.arange(past, past + n, device=inputs_embeds.device)[None]
        x = inputs_embeds
        for layer in self.layers:
            x = layer(x, modality_indicators, position_ids, attention_mask, cache)
        return self.norm(x)


class MPLUGOwl2LlamaForCausalLM(MPLUGOwl2PreTrainedModel, PortGenerationMixin):
    def __init__(self, config: MPLUGOwl2Config):
        super().__init__(config)
        self.model = MPLUGOwl2LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, images=None, modality_indicators=None, attention_mask=None, position_ids=None,
                cache=None, past_key_values=None, inputs_embeds=None, use_cache=None, labels=None,
                logits_to_keep: int = 0, **kwargs):
        use_cache = self.config.use_cache if use_cache is None else use_cache
        cache = resolve_cache(cache, past_key_values, use_cache, self.config)
        if inputs_embeds is None:
            if (input_ids == IMAGE_TOKEN_INDEX).any():
                inputs_embeds, modality_indicators, attention_mask, labels = self.model.splice(
                    input_ids, images, attention_mask, labels)
            else:
                inputs_embeds = self.model.embed_tokens(input_ids)
        hidden = self.model(inputs_embeds, modality_indicators, attention_mask, position_ids, cache)
        return self.lm_output(hidden, cache, use_cache, labels, logits_to_keep)

    @torch.no_grad()
    def generate(self, input_ids=None, images=None, attention_mask=None, **kwargs):
        """With images, the prompt is spliced into embeddings first; the result then holds only the new tokens
        (transformers' behaviour for inputs_embeds). Without images it is plain LLaMA generation."""
        if input_ids is not None and (input_ids == IMAGE_TOKEN_INDEX).any():
            embeds, indicators, mask, _ = self.model.splice(input_ids, images, attention_mask)
            return super().generate(inputs_embeds=embeds, attention_mask=mask, modality_indicators=indicators,
                                    **kwargs)
        return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, cache=None, past_key_values=None, attention_mask=None,
                                      inputs_embeds=None, modality_indicators=None, use_cache=True, **kwargs):
        cache = cache if cache is not None else past_key_values
        done = cached_length(cache)
        inputs = {"attention_mask": attention_mask, CACHE_FIELD: cache, "use_cache": use_cache,
                  "logits_to_keep": 1 if use_cache else 0}
        if inputs_embeds is not None and done == 0:
            return {**inputs, "inputs_embeds": inputs_embeds, "modality_indicators": modality_indicators}
        new = kwargs.get("next_sequence_length") or (
            attention_mask.shape[1] - done if attention_mask is not None else input_ids.shape[1] - done)
        return {**inputs, "input_ids": input_ids[:, input_ids.shape[1] - new:]}
