"""What both ports' model classes share: the PreTrainedModel settings of a released LLaMA-family checkpoint, the
common part of `_init_weights`, and the causal-LM head (logits of the last positions, loss, cache output).

`_init_weights` must make every parameter and computed buffer a checkpoint may lack: transformers 5 builds the model
on the meta device and leaves such keys as empty memory (tests/test_load_buffers.py)."""
from __future__ import annotations

from torch import nn
from transformers import GenerationMixin, PreTrainedModel

from .common import RMSNorm, causal_lm_loss, lm_output, to_weight

try:
    from transformers import initialization as init  # skips tensors the checkpoint already filled
except ImportError:  # older transformers: plain torch init
    from torch.nn import init


class PortPreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]  # saved by transformers 4.31
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
        else:
            self._init_port_weights(module, std)

    def _init_port_weights(self, module, std: float) -> None:
        """The port's own parameters and computed buffers (learned queries, BOI/EOI, position tables)."""


class PortGenerationMixin(GenerationMixin):
    """The causal-LM shell over `self.model` (embeddings, decoder) and `self.lm_head`; transformers finds the
    embeddings through its defaults (`model.embed_tokens`, `lm_head`). The name ends in GenerationMixin because
    transformers decides by name that a class can generate (`PreTrainedModel.can_generate`)."""

    def lm_output(self, hidden, cache, use_cache: bool, labels=None, logits_to_keep: int = 0):
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(to_weight(hidden, self.lm_head.weight)).float()
        return lm_output(logits, cache, use_cache, causal_lm_loss(logits, labels))
