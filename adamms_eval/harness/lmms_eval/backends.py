"""Which lmms-eval backend loads and runs a base, and how it is placed on devices.

`BACKENDS` maps the base's config.json `model_type` to the lmms-eval model that serves it (the built-ins for
Qwen2-VL and llava-hf checkpoints, our ports' backends for CogVLM and mPLUG-Owl2); `register_backend` adds one.
A backend that needs a package lmms-eval does not install (`REQUIRES`: Cambrian's needs the authors' `cambrian`) is
refused before anything loads, naming what to install."""
from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Callable

from ...errors import AdammsError
from ...session import lmms_spell

BACKENDS: dict[str, str] = {"qwen2_vl": "qwen2_vl", "llava": "llava_hf", "llava_onevision": "llava_hf",
                            "llava_next": "llava_hf", "cogvlm": "adamms_cogvlm", "mplug_owl2": "adamms_mplug_owl2",
                            "qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl", "cambrian_llama": "cambrian"}
# backend -> (module it imports, what to install): checked before the backend is loaded
REQUIRES: dict[str, tuple[str, str]] = {
    "cambrian": ("cambrian", "the authors' cambrian package, which is not on PyPI: pip install "
                             "git+https://github.com/cambrian-mllm/cambrian (lmms-eval's cambrian model imports "
                             "cambrian.model.builder)"),
}
# lmms-eval models shipped as files but missing from lmms-eval's model list (0.7 lists cambrians, not cambrian)
UNLISTED: dict[str, str] = {"cambrian": "lmms_eval.models.simple.cambrian.Cambrian"}
# lmms-eval's cambrian picks its chat template from the base folder's name (get_model_name_from_path)
CAMBRIAN_NAMES = ("cambrian-8b", "cambrian-13b", "cambrian-34b")
# bases whose lmms-eval backend cannot run here: model_type -> why. They merge fine as the other model.
NO_BACKEND: dict[str, str] = {
    "llavaonevision1_5": "LLaVA-OneVision-1.5 runs only with its remote code (lmms-eval's llava_onevision1_5 loads it "
                         "with trust_remote_code), which does not import under transformers 5 "
                         "(it needs transformers.modeling_attn_mask_utils)",
    "internvl_chat": "InternVL's remote-code layout runs only with its own modeling code (lmms-eval's internvl3 loads "
                     "it with trust_remote_code), which transformers 5 does not ship and this project does not run",
    "internvl": "lmms-eval serves InternVL-hf only through its chat model internvl_hf, which --model adamms "
                "cannot wrap",
}
# bases read by an architecture no backend here runs (their model_type alone would pick one): adapter -> why
NO_BACKEND_ARCH: dict[str, str] = {
    "yi_vl": "Yi-VL's projector is Linear, LayerNorm, GELU, Linear, LayerNorm (mlp2x_gelu_Norm), which neither "
             "lmms-eval's llava_hf (transformers' LlavaForConditionalGeneration: Linear, GELU, Linear; the llava-hf "
             "style conversion BUAADreamer/Yi-VL-34B-hf loads only after LLaMA-Factory swaps the projector class) "
             "nor its llava (the LLaVA package's builder has no mlp2x_gelu_Norm) builds; 01-ai/Yi-VL-34B itself runs "
             "only with 01-ai's VL/llava code",
}


def register_backend(model_type: str, backend_name: str) -> None:
    """Let `choose_backend` pick `backend_name` for bases whose config.json says `model_type`."""
    BACKENDS[model_type] = backend_name


def choose_backend(base: str, backend: str | None = None, spell: Callable = lmms_spell) -> str:
    if backend:
        return backend
    from ...arch.adapters import detect
    from ...arch.checkpoint import load_config
    config = load_config(base)
    model_type = config.get("model_type")
    try:
        arch = detect(config).name
    except AdammsError:
        arch = None
    if arch in NO_BACKEND_ARCH:
        raise AdammsError(f"no lmms-eval backend runs a {arch} base here: {NO_BACKEND_ARCH[arch]}; merge it as the "
                          f"other model into a base that runs (Table 6: Cambrian-34B), or pass {spell('backend', 'NAME')}")
    if model_type in NO_BACKEND and model_type not in BACKENDS:
        raise AdammsError(f"no lmms-eval backend runs a {model_type} model here: {NO_BACKEND[model_type]}; merge it "
                          "as the other model into a base that runs (Qwen2.5-VL, Qwen3-VL; in adamms compare: no "
                          f"`original: other` row), or pass {spell('backend', 'NAME')}")
    if model_type not in BACKENDS:
        raise AdammsError(f"no lmms-eval backend known for model_type {model_type!r}; pass "
                          f"{spell('backend', 'NAME')} (known: {', '.join(sorted(set(BACKENDS.values())))})")
    name = BACKENDS[model_type]
    check_requirements(name, base)
    return name


def check_requirements(backend: str, base: str) -> None:
    """Stop before loading when the backend's own package is missing or the base cannot be served as placed."""
    if backend in REQUIRES:
        module, install = REQUIRES[backend]
        if importlib.util.find_spec(module) is None:
            raise AdammsError(f"lmms-eval's {backend} backend needs {install}; install it, then rerun")
    if backend == "cambrian" and Path(base).name.lower() not in CAMBRIAN_NAMES:
        raise AdammsError(f"lmms-eval's cambrian backend picks its chat template from the base folder's name, which "
                          f"is {Path(base).name!r}; put the checkpoint in (or link it as) a folder named one of "
                          f"{', '.join(CAMBRIAN_NAMES)}")


def unlisted_backend(name: str):
    """lmms-eval's model class `name` when lmms-eval ships its file but does not list it (UNLISTED), else None."""
    if name not in UNLISTED:
        return None
    module, _, cls = UNLISTED[name].rpartition(".")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return None


def default_device_map(backend_kwargs: dict, device: str, cuda: bool) -> dict:
    """A device_map the user gave is kept (auto: a model larger than a card). Else the model goes to the run's
    device, except on GPUs under a launcher, where the backends put rank r on cuda:r themselves (lmms-eval's
    llava_hf defaults to "", its multi-process value, which transformers 5 refuses in one process)."""
    if not cuda or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        backend_kwargs.setdefault("device_map", device)
    return backend_kwargs
