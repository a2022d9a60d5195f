"""Which lmms-eval backend loads and runs a base, and how it is placed on devices.

`BACKENDS` maps the base's config.json `model_type` to the lmms-eval model that serves it (the built-ins for
Qwen2-VL and llava-hf checkpoints, our ports' backends for CogVLM and mPLUG-Owl2); `register_backend` adds one."""
from __future__ import annotations

import os
from typing import Callable

from ...errors import AdammsError
from ...session import lmms_spell

BACKENDS: dict[str, str] = {"qwen2_vl": "qwen2_vl", "llava": "llava_hf", "llava_onevision": "llava_hf",
                            "llava_next": "llava_hf", "cogvlm": "adamms_cogvlm", "mplug_owl2": "adamms_mplug_owl2",
                            "qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl"}
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


def register_backend(model_type: str, backend_name: str) -> None:
    """Let `choose_backend` pick `backend_name` for bases whose config.json says `model_type`."""
    BACKENDS[model_type] = backend_name


def choose_backend(base: str, backend: str | None = None, spell: Callable = lmms_spell) -> str:
    if backend:
        return backend
    from ...arch.checkpoint import load_config
    model_type = load_config(base).get("model_type")
    if model_type in NO_BACKEND and model_type not in BACKENDS:
        raise AdammsError(f"no lmms-eval backend runs a {model_type} model here: {NO_BACKEND[model_type]}; merge it "
                          "as the other model into a base that runs (Qwen2.5-VL, Qwen3-VL; in adamms compare: no "
                          f"`original: other` row), or pass {spell('backend', 'NAME')}")
    if model_type not in BACKENDS:
        raise AdammsError(f"no lmms-eval backend known for model_type {model_type!r}; pass "
                          f"{spell('backend', 'NAME')} (known: {', '.join(sorted(set(BACKENDS.values())))})")
    return BACKENDS[model_type]


def default_device_map(backend_kwargs: dict, device: str, cuda: bool) -> dict:
    """A device_map the user gave is kept (auto: a model larger than a card). Else the model goes to the run's
    device, except on GPUs under a launcher, where the backends put rank r on cuda:r themselves (lmms-eval's
    llava_hf defaults to "", its multi-process value, which transformers 5 refuses in one process)."""
    if not cuda or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        backend_kwargs.setdefault("device_map", device)
    return backend_kwargs
