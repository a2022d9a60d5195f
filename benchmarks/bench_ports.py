#!/usr/bin/env python
"""Per-token decode time of our CogVLM / mPLUG-Owl2 ports against transformers' own LLaVA and Qwen2-VL classes
(what lmms-eval's `llava_hf` / `qwen2_vl` backends run), with the same language-model size.

Each model answers one image question greedily with a KV cache (min_new_tokens forces the length); a logits
processor stamps the time of every decoding step, and a run's per-token time is the median interval between
consecutive steps after the first (so image encoding and prefill are excluded). Min and median over
interleaved runs; ratios are port / llava_hf.

    python benchmarks/bench_ports.py                  # tiny zoo sizes (hidden 64, 2 layers) and mid (hidden 1024, 8 layers)
    python benchmarks/bench_ports.py --sizes tiny --repeats 3
    python benchmarks/bench_ports.py --device cuda --dtype bfloat16 --sizes tiny,mid,wide   # on a GPU

Prints ratios measured in this run; it is not a test.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
MID = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16)
WIDE = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=4, num_attention_heads=32)  # 7B-wide layers
SIZES = {"mid": MID, "wide": WIDE}


def _port_inputs(name, model, tok, img):
    from adamms_eval.ports import build_conversation_input_ids, build_prompt, process_images, tokenizer_image_token
    if name == "cogvlm":
        enc = build_conversation_input_ids(model.config, tok, query="What is in the image?", images=[img])
        return {"input_ids": enc["input_ids"][None], "token_type_ids": enc["token_type_ids"][None],
                "images": torch.stack(enc["images"])}
    return {"input_ids": torch.tensor([tokenizer_image_token(build_prompt("What is in the image?"), tok)]),
            "images": process_images([img], 28)}


def _hf_inputs(proc, img):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
    return dict(proc(images=img, text=proc.apply_chat_template(msgs, add_generation_prompt=True), return_tensors="pt"))


def load_models(zoo: dict, size: str, device: str = "cpu") -> dict:
    """name -> (model, inputs); `mid` / `wide` widen every language model to SIZES[size] (random weights, same
    vision parts)."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
    from adamms_eval.ports import PORTS
    from adamms_eval.ports.common import load_tokenizer
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    out = {}
    for name in ("cogvlm", "mplug_owl2"):
        cls, tok = PORTS[name], load_tokenizer(zoo[name], None, name, "")
        if size == "tiny":
            model = cls.from_pretrained(zoo[name])
        else:
            cfg = cls.config_class.from_pretrained(zoo[name])
            for k, v in SIZES[size].items():
                setattr(cfg, k, v)
            cfg.num_key_value_heads = SIZES[size]["num_attention_heads"]
            if getattr(cfg, "head_dim", None):  # a saved head_dim would keep the tiny width per head
                cfg.head_dim = cfg.hidden_size // cfg.num_attention_heads
            torch.manual_seed(0)
            with torch.device(device):  # built where it runs: a 7B-wide layer stack initialises fast on a GPU
                model = cls(cfg)
        out[name] = (model.eval(), _port_inputs(name, model, tok, img))
    for name, zoo_name in (("llava_hf", "llava15_hf"), ("qwen2_vl", "qwen2_vl")):
        proc = AutoProcessor.from_pretrained(zoo[zoo_name])
        if size == "tiny":
            model = AutoModelForImageTextToText.from_pretrained(zoo[zoo_name])
        else:
            cfg = AutoConfig.from_pretrained(zoo[zoo_name])
            lm = SIZES[size]
            for k, v in {**lm, "num_key_value_heads": lm["num_attention_heads"]}.items():
                setattr(cfg.text_config, k, v)
            if getattr(cfg.text_config, "head_dim", None):  # the tiny config saves head_dim 16: widen it too
                cfg.text_config.head_dim = lm["hidden_size"] // lm["num_attention_heads"]
            if hasattr(cfg.text_config, "layer_types"):
                cfg.text_config.layer_types = cfg.text_config.layer_types[:1] * lm["num_hidden_layers"]
            if zoo_name == "qwen2_vl":  # the merger projects to the LM width; head_dim 64 or 128: M-RoPE sections
                cfg.vision_config.hidden_size = lm["hidden_size"]  # sum to head_dim / 2
                half = lm["hidden_size"] // lm["num_attention_heads"] // 2
                cfg.text_config.rope_parameters = {**cfg.text_config.rope_parameters,
                                                   "mrope_section": [half // 4, 3 * half // 8, 3 * half // 8]}
            torch.manual_seed(0)
            with torch.device(device):
                model = AutoModelForImageTextToText.from_config(cfg)
        out[name] = (model.eval(), _hf_inputs(proc, img))
    return out


class _Stamps:
    """A logits processor that only records when each decoding step reached it."""

    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores):
        if scores.is_cuda:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        return scores


@torch.inference_mode()
def per_token_seconds(model, inputs, n: int) -> float:
    from transformers import LogitsProcessorList
    stamps = _Stamps()
    model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1,
                   logits_processor=LogitsProcessorList([stamps]))
    return statistics.median(np.diff(stamps.times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="tiny,mid")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    a = p.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    from adamms_eval.testing.tiny import build_zoo
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        zoo = build_zoo(tmp, ["cogvlm", "mplug_owl2", "llava15_hf", "qwen2_vl"])
        for size in a.sizes.split(","):
            models = {name: (model.to(a.device, dtype), {k: v.to(a.device, dtype) if v.is_floating_point()
                                                         else v.to(a.device) for k, v in x.items()})
                      for name, (model, x) in load_models(zoo, size, a.device).items()}
            per_token = {name: [] for name in models}
            for name, (model, inputs) in models.items():  # warm-up
                per_token_seconds(model, inputs, 4)
            for _ in range(a.repeats):  # interleaved, so load changes hit every model alike
                for name, (model, inputs) in models.items():
                    per_token[name].append(per_token_seconds(model, inputs, a.tokens))
            ref = min(per_token["llava_hf"])
            print(f"\n{size}: LM hidden {models['cogvlm'][0].config.hidden_size}, "
                  f"{models['cogvlm'][0].config.num_hidden_layers} layers; decode ms/token (median step of "
                  f"{a.tokens} tokens), {a.repeats} repeats, {a.device} {a.dtype}"
                  + (f" ({torch.cuda.get_device_name()})" if a.device.startswith("cuda") else
                     f", {torch.get_num_threads()} threads"))
            print("| model | min (ms) | median (ms) | min / llava_hf min |\n|---|---:|---:|---:|")
            for name, ts in per_token.items():
                print(f"| {name} | {1e3 * min(ts):.2f} | {1e3 * statistics.median(ts):.2f} | {min(ts) / ref:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
