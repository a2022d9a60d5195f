"""Our transformers-5 ports of CogVLM-chat and mPLUG-Owl2, loading the released checkpoints without conversion.

Importing this package registers model_type "cogvlm" / "mplug_owl2" with AutoConfig and AutoModelForCausalLM.
Each port is a sub-package split as transformers' models are (configuration, modeling, processing); `base` and
`common` hold what both share.
"""
from transformers import AutoConfig, AutoModelForCausalLM

from .cogvlm import CogVLMConfig, CogVLMForCausalLM, build_conversation_input_ids, build_position_ids
from .mplug_owl2 import (IMAGE_TOKEN_INDEX, MPLUGOwl2Config, MPLUGOwl2LlamaForCausalLM, build_prompt, process_images,
                         tokenizer_image_token)

PORTS = {"cogvlm": CogVLMForCausalLM, "mplug_owl2": MPLUGOwl2LlamaForCausalLM}

for _cls in PORTS.values():
    try:
        AutoConfig.register(_cls.config_class.model_type, _cls.config_class)
        AutoModelForCausalLM.register(_cls.config_class, _cls)
    except ValueError:  # already registered (re-import)
        pass

__all__ = ["CogVLMConfig", "CogVLMForCausalLM", "MPLUGOwl2Config", "MPLUGOwl2LlamaForCausalLM", "PORTS",
           "IMAGE_TOKEN_INDEX", "build_conversation_input_ids", "build_position_ids", "build_prompt",
           "process_images", "tokenizer_image_token"]
