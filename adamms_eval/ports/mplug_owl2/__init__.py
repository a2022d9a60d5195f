"""mPLUG-Owl2 (MAGAer13/mplug-owl2-llama2-7b): configuration, model (released parameter names) and input building."""
from .configuration import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX, MPLUGOwl2Config
from .modeling import MPLUGOwl2LlamaForCausalLM, MPLUGOwl2LlamaModel, sincos_1d, sincos_2d
from .processing import (batch_inputs, build_prompt, expand_to_square, image_settings, model_inputs, process_images,
                         tokenizer_image_token)

__all__ = ["batch_inputs", "MPLUGOwl2Config", "MPLUGOwl2LlamaForCausalLM", "MPLUGOwl2LlamaModel", "IMAGE_TOKEN_INDEX",
           "DEFAULT_IMAGE_TOKEN", "build_prompt", "expand_to_square", "image_settings", "model_inputs",
           "process_images", "sincos_1d", "sincos_2d", "tokenizer_image_token"]
