"""mPLUG-Owl2's configuration: mplug-owl2-llama2-7b's config.json (a flat LLaMA-2 config plus `visual_config`)."""
from __future__ import annotations

from transformers import PretrainedConfig

IMAGE_TOKEN_INDEX = -200
DEFAULT_IMAGE_TOKEN = "<|image|>"
# mplug-owl2-llama2-7b's published visual_config
VISUAL_MODEL_DEFAULTS = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                             image_size=448, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-6)
ABSTRACTOR_DEFAULTS = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=6, num_attention_heads=16,
                           num_learnable_queries=64, encoder_hidden_size=1024, grid_size=32, layer_norm_eps=1e-6)


class MPLUGOwl2Config(PretrainedConfig):
    """mplug-owl2-llama2-7b's config.json: a flat LLaMA-2 config plus `visual_config` {visual_model, visual_abstractor}."""
    model_type = "mplug_owl2"

    def __init__(self, vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=None, hidden_act="silu", max_position_embeddings=2048,
                 initializer_range=0.02, rms_norm_eps=1e-6, rope_theta=10000.0, use_cache=True, visual_config=None,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, **kwargs):
        self.vocab_size, self.hidden_size, self.intermediate_size = vocab_size, hidden_size, intermediate_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        if self.num_key_value_heads != num_attention_heads:
            raise ValueError("mPLUG-Owl2 (LLaMA-2-7B) uses multi-head attention: num_key_value_heads must equal "
                             "num_attention_heads")
        self.hidden_act, self.max_position_embeddings = hidden_act, max_position_embeddings
        self.initializer_range, self.rms_norm_eps, self.use_cache = initializer_range, rms_norm_eps, use_cache
        rope_scaling = kwargs.pop("rope_scaling", None)
        if rope_scaling:
            raise ValueError(f"rope_scaling={rope_scaling} is not supported by this port")
        self.rope_theta = (kwargs.pop("rope_parameters", None) or {}).get("rope_theta", rope_theta)
        visual_config = visual_config or {}
        self.visual_config = {"visual_model": {**VISUAL_MODEL_DEFAULTS, **visual_config.get("visual_model", {})},
                              "visual_abstractor": {**ABSTRACTOR_DEFAULTS, **visual_config.get("visual_abstractor", {})}}
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def num_image_tokens(self) -> int:
        return self.visual_config["visual_abstractor"]["num_learnable_queries"] + 1  # + vit_eos
