"""Which VLMEvalKit wrapper serves a base (`WRAPPERS`, by the base's model_type), and `AdammsVLM`, the model "class"
VLMEvalKit builds: settings checked and the pair planned before the wrapper loads anything."""
from __future__ import annotations

from pathlib import Path

from ...errors import AdammsError
from ...session import MergeSession, lmms_spell, parse_settings
from ...session.session import console
from . import LOADING
from .model import HARNESS, AdammsLlava, AdammsLlavaOneVision, AdammsQwen2_5VL, AdammsQwen2VL, AdammsQwen3VL
from .ports import AdammsCogVlm, AdammsMplugOwl2

LOAD_KEYS = tuple(LOADING)

# model_type in the base's config.json -> the wrapper that loads and runs it
WRAPPERS = {"qwen2_vl": AdammsQwen2VL, "llava_onevision": AdammsLlavaOneVision, "llava": AdammsLlava,
            "cogvlm": AdammsCogVlm, "mplug_owl2": AdammsMplugOwl2, "qwen2_5_vl": AdammsQwen2_5VL,
            "qwen3_vl": AdammsQwen3VL}


def resolve_model_dir(path) -> str:
    """A model directory, or a hub id resolved through the Hugging Face cache (downloads unless HF_HUB_OFFLINE=1)."""
    if path is None or Path(str(path)).expanduser().is_dir():
        return None if path is None else str(Path(str(path)).expanduser())
    if str(path).count("/") == 1 and not str(path).startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download
        try:
            return snapshot_download(str(path))
        except Exception as e:  # offline and not cached, unknown repo, no network
            raise AdammsError(f"{path}: not a local model directory, and the hub id could not be resolved "
                              f"({type(e).__name__}); pass the folder that holds config.json") from None
    raise AdammsError(f"{path}: no such model directory; pass the folder that holds config.json")


def wrapper_class(base: str):
    from ...arch.checkpoint import load_config
    model_type = load_config(base).get("model_type")
    if model_type not in WRAPPERS:
        raise AdammsError(f"no VLMEvalKit wrapper known for model_type {model_type!r} of {base}; "
                          f"supported: {', '.join(sorted(WRAPPERS))}")
    return WRAPPERS[model_type]


def refuse_merge_settings(base, kwargs: dict, spell=lmms_spell, cls=None) -> None:
    """Without `other` nothing is merged: a merge setting there is a mistake, not something to ignore; and an
    argument the wrapper `cls` does not take is refused now, before the model loads."""
    from ...merging.methods import REGISTRY
    from ...session.settings import BY_NAME, suggest
    merge_only = sorted(k for k in kwargs if k in BY_NAME or any(k in m.params for m in REGISTRY.values()))
    if merge_only:
        raise AdammsError(f"{spell(merge_only[0], kwargs[merge_only[0]])} merges into the base: add "
                          f"{spell('other', 'DIR')} (without it, {base} runs unmerged)")
    unknown = sorted(k for k in kwargs if cls is not None and cls.KWARGS is not None and k not in cls.KWARGS)
    if unknown:
        raise AdammsError(f"{spell(unknown[0], kwargs[unknown[0]])} is not an argument of VLMEvalKit's "
                          f"{cls.WRAPPER.__name__}{suggest(unknown[0], set(cls.KWARGS) | set(LOAD_KEYS))}")


def AdammsVLM(base: str, other: str | None = None, use_vllm: bool = False, spell=lmms_spell, **kwargs):  # noqa: N802
    """The adamms model for the base's architecture (a VLMEvalKit model "class": `{"class": "AdammsVLM", ...}`).

    Keywords: adamms settings (alpha, method and its parameters, pretrained, alphas, search_samples,
    search_seed, metric, cache_dir, storage, search_output, ...; see adamms_eval.session), loading
    (dtype, device_map, attn_implementation), and the wrapper's own (max_new_tokens, min_pixels, ...).
    Without `other` it is the plain wrapper on `base` (no merge) that also runs on CPU."""
    if use_vllm:
        raise AdammsError("AdammsVLM generates with transformers; drop --use-vllm")
    base, other = resolve_model_dir(base), resolve_model_dir(other)
    if kwargs.get("pretrained"):
        kwargs["pretrained"] = resolve_model_dir(kwargs["pretrained"])
    cls = wrapper_class(base)
    load_kwargs = {k: kwargs.pop(k) for k in LOAD_KEYS if k in kwargs}
    if other is None:
        refuse_merge_settings(base, kwargs, spell, cls)
        return cls(base, None, load_kwargs, **kwargs)
    settings, wrapper_kwargs = parse_settings({"base": base, "other": other, **kwargs}, backend_params=cls.KWARGS,
                                              spell=spell, backend_label=f"VLMEvalKit's {cls.WRAPPER.__name__}")
    session = MergeSession(settings, cls.WRAPPER.__name__, harness=HARNESS, spell=spell,  # preflight, before loading
                           say=console)  # the chosen α and the record's path, as the lmms-eval model says them
    return cls(base, session, load_kwargs, **wrapper_kwargs)
