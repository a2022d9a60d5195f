"""CogVLM-chat (THUDM/cogvlm-chat-hf): configuration, model (released parameter names) and input building."""
from .configuration import LANGUAGE_TOKEN_TYPE, TEMPLATES, VISION_TOKEN_TYPE, CogVLMConfig
from .modeling import CogVLMForCausalLM, CogVLMModel, build_position_ids, vision_expert_mask
from .processing import batch_inputs, build_conversation_input_ids, encode_prompt, history_to_prompt, model_inputs

__all__ = ["batch_inputs", "CogVLMConfig", "CogVLMForCausalLM", "CogVLMModel", "LANGUAGE_TOKEN_TYPE", "VISION_TOKEN_TYPE", "TEMPLATES",
           "build_conversation_input_ids", "build_position_ids", "encode_prompt", "history_to_prompt", "model_inputs",
           "vision_expert_mask"]
