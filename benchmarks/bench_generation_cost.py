#!/usr/bin/env python
"""Seconds per generation of a full-size Qwen2-VL-7B (random weights, the released config) on a GPU: the number
the GPU-hour estimates of `adamms compare`'s paper configurations multiply by.

The model is built from the published config.json (tests/fixtures/released/qwen2-vl-7b-instruct) with random
weights on the device; prompts are a chat-template-sized text with one image of the given size (Qwen2-VL's own
image processor at its default settings decides the number of image tokens). Each generation is forced to N new
tokens (min_new_tokens = max_new_tokens: random weights would stop at random), at batch 1, greedy, with the KV
cache, as lmms-eval's qwen2_vl backend generates. Reports min / median seconds per generation for each image size
and answer length, measured in this run.

    python benchmarks/bench_generation_cost.py --device cuda [--sizes 448x448,1024x768] [--tokens 1,10] [--n 10]
    python benchmarks/bench_generation_cost.py --device cpu --config tests/fixtures/... (dry run on a small config)
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RELEASED = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "released" / "qwen2-vl-7b-instruct"
PROMPT_TOKENS = 40  # system prompt + chat markers + a short MME-style question, roughly


def inputs(cfg, image_size: tuple[int, int], device) -> dict:
    from transformers import Qwen2VLImageProcessor
    proc = Qwen2VLImageProcessor()  # the released preprocessor's defaults: 14 px patches, 2x2 merge
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (image_size[1], image_size[0], 3), dtype=np.uint8))
    px = proc(images=img, return_tensors="pt")
    n_image = int(px["image_grid_thw"].prod()) // proc.merge_size ** 2
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, 150000, (PROMPT_TOKENS,), generator=g)
    ids = torch.cat([text[:20], torch.tensor([cfg.vision_start_token_id]), torch.full((n_image,), cfg.image_token_id),
                     torch.tensor([cfg.vision_end_token_id]), text[20:]])[None]
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "pixel_values": px["pixel_values"].to(device), "image_grid_thw": px["image_grid_thw"].to(device)}, n_image


@torch.inference_mode()
def seconds(model, x, n_new: int) -> float:
    if x["input_ids"].is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.generate(**x, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, num_beams=1)
    if x["input_ids"].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(RELEASED), help="folder with the model's config.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--sizes", default="448x448,1024x768", help="image sizes WxH")
    p.add_argument("--tokens", default="1,10", help="answer lengths in tokens")
    p.add_argument("--n", type=int, default=10, help="timed generations per point (after one warm-up)")
    a = p.parse_args(argv)
    from transformers import AutoConfig, AutoModelForImageTextToText
    cfg = AutoConfig.from_pretrained(a.config)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(a.device):
        model = AutoModelForImageTextToText.from_config(cfg, dtype=getattr(torch, a.dtype)).eval()
    params = sum(t.numel() for t in model.parameters())
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    print(f"{cfg.architectures or cfg.model_type}: {params / 1e9:.2f} B parameters, {a.dtype}, on {name} "
          f"(built in {time.perf_counter() - t0:.1f} s); batch 1, greedy, KV cache, {a.n} runs per point")
    print("| image | image tokens | new tokens | min s/gen | median s/gen |\n|---|---:|---:|---:|---:|")
    for size in a.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        x, n_image = inputs(cfg, (w, h), a.device)
        for n_new in (int(t) for t in a.tokens.split(",")):
            seconds(model, x, n_new)  # warm-up
            ts = [seconds(model, x, n_new) for _ in range(a.n)]
            print(f"| {w}x{h} | {n_image} | {n_new} | {min(ts):.3f} | {statistics.median(ts):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
