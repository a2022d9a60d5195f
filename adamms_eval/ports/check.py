"""Smoke check of a real checkpoint with our ports: load it, answer one question about one image, print the answer.

    python -m adamms_eval.ports.check cogvlm-chat-hf --tokenizer vicuna-7b-v1.5 --image examples/1.png \\
        --query "Describe this image" [--dtype bfloat16] [--device-map auto] [--max-new-tokens 128]
    python -m adamms_eval.ports.check mplug-owl2-llama2-7b --image examples/1.png --query "Describe the image."

Compare the printed answer with the example output on the model card (greedy decoding, like the cards' examples).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..arch.checkpoint import load_config
from ..errors import AdammsError
from . import PORTS
from .common import first_device, load_tokenizer


def answer(folder: str, image_path: str, query: str, tokenizer: str | None = None, dtype: str = "bfloat16",
           device_map: str = "auto", max_new_tokens: int = 128) -> str:
    from PIL import Image
    if not Path(image_path).is_file():
        raise AdammsError(f"no image at {image_path}; pass --image FILE")
    model_type = load_config(folder).get("model_type") or ""
    if model_type not in PORTS:
        raise AdammsError(f"{folder}: model_type {model_type!r} has no port here (known: {', '.join(PORTS)})")
    tok = load_tokenizer(folder, tokenizer, model_type, "Vicuna-7B-v1.5" if model_type == "cogvlm" else "LLaMA-2")
    model = PORTS[model_type].from_pretrained(folder, dtype=getattr(torch, dtype), device_map=device_map).eval()
    image = Image.open(image_path).convert("RGB")
    dev = first_device(model)
    if model_type == "cogvlm":
        from .cogvlm import history_to_prompt, model_inputs
        text = history_to_prompt(model.config.template_version, [], query)
        inputs = model_inputs(model.config, tok, text, [image], dev, model.dtype)
        skip = inputs["input_ids"].shape[1]
    else:
        from transformers import CLIPImageProcessor
        from .mplug_owl2 import build_prompt, model_inputs
        pp = CLIPImageProcessor.from_pretrained(folder)
        side = model.config.visual_config["visual_model"]["image_size"]
        inputs = model_inputs(tok, build_prompt(query), [image], side, pp.image_mean, pp.image_std, dev, model.dtype)
        skip = 0  # generate() returns only the new tokens when the prompt holds an image
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    return tok.decode(out[0, skip:], skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adamms_eval.ports.check", description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--image", required=True)
    p.add_argument("--query", default="Describe this image")
    p.add_argument("--tokenizer", help="folder with the tokenizer (CogVLM: vicuna-7b-v1.5)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--device-map", default="auto")
    p.add_argument("--max-new-tokens", type=int, default=128)
    a = p.parse_args(argv)
    start = time.perf_counter()
    try:
        text = answer(a.folder, a.image, a.query, a.tokenizer, a.dtype, a.device_map, a.max_new_tokens)
    except AdammsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    print(f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
