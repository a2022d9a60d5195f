"""CogVLM-chat's configuration: cogvlm-chat-hf's config.json, with the published defaults of the fields it omits."""
from __future__ import annotations

from transformers import PretrainedConfig

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
