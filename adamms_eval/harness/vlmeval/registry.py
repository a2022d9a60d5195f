"""`import adamms_eval_adapters.vlmeval` registers AdaMMS with VLMEvalKit (which has no plugin mechanism).

- `vlmeval.vlm.AdammsVLM`: the model "class" for `--config` files
  (`{"model": {"my_merge": {"class": "AdammsVLM", "base": DIR, "other": DIR, "alpha": "auto"}}, ...}`);
- `vlmeval.config.supported_VLM`: named presets for the paper's Qwen2-VL / LLaVA-OneVision pair, and
  `register(name, **settings)` for your own, usable as `--model name`;
- the offline datasets of `tasks/make_vlmeval_datasets.py` (`adamms tasks DIR`) under VLMEvalKit's own
  dataset classes.

Then run VLMEvalKit's runner in the same process, e.g.
`python -c "import adamms_eval_adapters.vlmeval, vlmeval.run as r; r.main()" --config my_config.json`,
or use the `adamms-vlmeval` launcher, which does this and checks the outputs.
"""
from __future__ import annotations

from functools import partial

from .importing import vlmeval_modules

vlmeval = vlmeval_modules()
from vlmeval.config import supported_VLM  # noqa: E402
from vlmeval.dataset import ImageMCQDataset, ImageVQADataset, ImageYORNDataset  # noqa: E402

from .wrappers import AdammsVLM  # noqa: E402

# Offline datasets (`adamms tasks DIR` writes DIR/LMUData/<name>.tsv). Registered without an md5:
# they are local files, never downloaded. The VQA name contains "GQA": VLMEvalKit picks its VQA scorer by
# name, and that family's is exact match (answer == prediction after strip and lower-case).
DATASETS = {"AdammsShapes_YN": ImageYORNDataset, "AdammsShapes_MCQ": ImageMCQDataset,
            "AdammsShapes_GQA": ImageVQADataset}

# The paper's VLMEvalKit pair (Qwen2-VL-7B <- LLaVA-OneVision-7B), alpha=auto; hub ids resolve from the HF cache.
PRESETS = {
    "AdaMMS_Qwen2-VL-7B_LLaVA-OV-7B": dict(base="Qwen/Qwen2-VL-7B-Instruct",
                                           other="llava-hf/llava-onevision-qwen2-7b-ov-hf"),
    "AdaMMS_LLaVA-OV-7B_Qwen2-VL-7B": dict(base="llava-hf/llava-onevision-qwen2-7b-ov-hf",
                                           other="Qwen/Qwen2-VL-7B-Instruct"),
}


def register(name: str, **settings) -> str:
    """Make `--model name` build AdammsVLM(**settings) in VLMEvalKit's runner."""
    supported_VLM[name] = partial(AdammsVLM, **settings)
    return name


def _register_all() -> None:
    import vlmeval.vlm
    vlmeval.vlm.AdammsVLM = AdammsVLM
    for name, settings in PRESETS.items():
        register(name, **settings)
    for name, cls in DATASETS.items():
        cls.DATASET_URL.setdefault(name, "")  # '' = the local $LMUData/<name>.tsv


_register_all()
__all__ = ["AdammsVLM", "register", "DATASETS", "PRESETS"]
