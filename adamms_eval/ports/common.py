"""Pieces both ports share: RMSNorm, LLaMA rotary positions, the causal/padding mask for SDPA, cache plumbing,
image preprocessing with PIL, and finding the tokenizer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoTokenizer, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..errors import AdammsError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# transformers renamed past_key_values -> cache during 5.x; follow whichever this version's outputs use
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class RMSNorm(nn.Module):
    """LLaMA's RMSNorm: normalise in fp32, scale, cast back."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, scale_in_fp32: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps
        self.scale_in_fp32 = scale_in_fp32  # CogVLM scales before casting back, LLaMA after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return (self.weight * x).to(dtype) if self.scale_in_fp32 else self.weight * x.to(dtype)


class GatedMLP(nn.Module):
    """LLaMA's SwiGLU feed-forward (gate_proj, up_proj, down_proj; no biases)."""

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def to_weight(x: torch.Tensor, weight: torch.Tensor, dtype=None) -> torch.Tensor:
    """x on `weight`'s device (a device_map split), in `dtype`; an offloaded weight (meta, CPU/disk offload) is
    brought in by accelerate's hook, which also moves its module's inputs, so then only the dtype changes."""
    return x.to(device=None if weight.device.type == "meta" else weight.device, dtype=dtype)


def first_device(model: nn.Module) -> torch.device:
    """Where inputs go: the first parameter that is not offloaded (accelerate executes offloaded ones there too)."""
    return next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))


def rotary(position_ids: torch.Tensor, head_dim: int, theta: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (B, 1, L, head_dim) in the HF LLaMA layout (cat(freqs, freqs)); angles in fp32."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim)
    freqs = position_ids.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def attend(q, k, v, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Causal SDPA over (B, H, L, D); q holds the last q_len positions of the kv_len keys.

    attention_mask is the usual 2-D (B, kv_len) 1/0 padding mask or None. A padded query row keeps its own
    position so no row is fully masked (its output is never used)."""
    q_len, kv_len = q.shape[-2], k.shape[-2]
    if attention_mask is None or bool(attention_mask.all()):
        if q_len == kv_len:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if q_len == 1:
            return F.scaled_dot_product_attention(q, k, v)
        attention_mask = None
    past = kv_len - q_len
    qpos = torch.arange(q_len, device=q.device) + past
    kpos = torch.arange(kv_len, device=q.device)
    allowed = (kpos[None, :] <= qpos[:, None])[None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, -kv_len:].to(q.device, torch.bool)
        allowed = allowed | (kpos[None, :] == qpos[:, None])[None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])


def resolve_cache(cache, past_key_values, use_cache: bool, config):
    """The forward's cache argument under either name; a fresh DynamicCache when caching without one."""
    cache = cache if cache is not None else past_key_values
    if cache is None and use_cache:
        cache = DynamicCache(config=config)
    return cache


def cached_length(cache) -> int:
    return cache.get_seq_length() if cache is not None else 0


def lm_output(logits, cache, use_cache: bool, loss=None, hidden=None) -> CausalLMOutputWithPast:
    return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=hidden,
                                  **{CACHE_FIELD: cache if use_cache else None})


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor | None):
    if labels is None:
        return None
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device),
                           ignore_index=-100)


def load_tokenizer(checkpoint: str | Path, tokenizer: str | Path | None, model_name: str, hint: str):
    """The tokenizer beside the checkpoint, else the one at `tokenizer`; a clear error when neither exists."""
    names = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    for where in ([tokenizer] if tokenizer else []) + [checkpoint]:
        if where and any((Path(where) / n).is_file() for n in names):
            return AutoTokenizer.from_pretrained(str(where))
    if tokenizer:
        raise AdammsError(f"tokenizer={tokenizer} holds no tokenizer files ({', '.join(names)}); "
                          f"point it at a folder with the {hint} tokenizer")
    raise AdammsError(f"{checkpoint} has no tokenizer and none was given: {model_name} uses the {hint} tokenizer; "
                      f"pass tokenizer=PATH (a folder with tokenizer files)")


def pil_to_tensor(image, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """RGB, bicubic resize to size x size with PIL (torchvision's Resize on a PIL image does the same),
    then /255 and per-channel normalisation: (3, size, size) float32."""
    from PIL import Image
    image = image.convert("RGB").resize((size, size), Image.BICUBIC)
    arr = np.asarray(image, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def left_pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    """1-D tensors stacked to (B, longest), each padded on the left with `value` (generation appends on the right,
    so every row's last prompt token is the last column)."""
    width = max(len(r) for r in rows)
    return torch.stack([F.pad(r, (width - len(r), 0), value=value) for r in rows])
