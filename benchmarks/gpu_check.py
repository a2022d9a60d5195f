#!/usr/bin/env python
"""The checks that need a GPU, on the tiny checkpoints: run it on a CUDA machine (`--device cpu` is a dry run).

What the CPU test suite cannot show, measured on one GPU:
- our CogVLM / mPLUG-Owl2 ports on CUDA in fp32 / bf16 / fp16: greedy answers equal CPU fp32's (fp32), cached and
  uncached decoding give the same logits, greedy decoding is deterministic, the one-command real-checkpoint check
  (`python -m adamms_eval.ports.check`) runs with `--device-map auto`;
- a `device_map` with "cpu" entries beside the GPU (accelerate offloads those modules and runs them on the GPU
  through its hooks) generates what the model wholly on the GPU generates; LazyMerge refuses it with a clear error;
- LazyMerge on CUDA (paths on the GPU, and in pinned host memory): after set(α) the weights equal `adamms merge`'s
  checkpoint bit for bit and generate the same; set(0) is the base bit for bit; a LazyMerge built on CPU follows
  `model.to("cuda")`;
- the same for transformers' Qwen2-VL base ← LLaVA-OneVision other (the paper's main pair, tiny).

    python benchmarks/gpu_check.py [--device cuda] [--out results.json]

Prints one line per check (PASS/FAIL with its number) and exits 1 if any failed. It is a check script, not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_ports
RESULTS: list[dict] = []
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def record(name: str, ok: bool, **numbers) -> None:
    RESULTS.append({"check": name, "ok": bool(ok), **numbers})
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {json.dumps(numbers, default=str)}", flush=True)


def image(seed=0, w=40, h=30):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def port_inputs(name, model, tok, device, dtype):
    """bench_ports' one image question for a port, on `device`, images in `dtype`."""
    from bench_ports import _port_inputs
    return {k: (v.to(dtype) if v.is_floating_point() else v).to(device)
            for k, v in _port_inputs(name, model, tok, image()).items()}


@torch.inference_mode()
def greedy(model, x, n=12):
    return model.generate(**x, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1).cpu()


@torch.inference_mode()
def cached_vs_uncached(name, model, x) -> float:
    """Largest |logit| difference between cached decoding and one uncached forward over the same tokens."""
    out = model.generate(**x, max_new_tokens=6, min_new_tokens=6, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    n = len(out.logits)
    new = out.sequences[0, -n:]
    if name == "cogvlm":
        tt = torch.cat([x["token_type_ids"], torch.zeros(1, n, dtype=torch.long, device=new.device)], 1)
        full = model(input_ids=out.sequences, token_type_ids=tt, images=x["images"], use_cache=False).logits
    else:
        ids = torch.cat([x["input_ids"], new[None]], 1)
        full = model(input_ids=ids, images=x["images"], use_cache=False).logits
    cached = torch.stack(out.logits, 1)[0].float()
    return (cached - full[0, -n - 1:-1].float()).abs().max().item() / full.float().abs().max().item()


def split_map(model, device) -> dict:
    """First half of the decoder layers (and the vision parts) on `device`, the rest and the head on the CPU."""
    n = model.config.num_hidden_layers
    dm = {name: device for name, _ in model.named_children() if name != "model"}
    for name, _ in model.model.named_children():
        dm[f"model.{name}"] = device
    del dm["model.layers"]
    for i in range(n):
        dm[f"model.layers.{i}"] = device if i < n // 2 else "cpu"
    dm["model.norm"] = dm["lm_head"] = "cpu"
    return dm


def check_ports(zoo, device, tmp: Path) -> None:
    from adamms_eval import LazyMerge
    from adamms_eval.errors import AdammsError
    from adamms_eval.merging.merger import open_merger, write_merged
    from adamms_eval.ports import PORTS
    from adamms_eval.ports.common import load_tokenizer
    others = {"cogvlm": "llava15_hf", "mplug_owl2": "cogvlm"}
    for name, cls in PORTS.items():
        tok = load_tokenizer(zoo[name], None, name, "")
        cpu = cls.from_pretrained(zoo[name]).eval()
        ref = greedy(cpu, port_inputs(name, cpu, tok, "cpu", torch.float32))
        for dname, dtype in DTYPES.items():
            t0 = time.perf_counter()
            model = cls.from_pretrained(zoo[name], dtype=dtype, device_map=device).eval()
            x = port_inputs(name, model, tok, device, dtype)
            a, b = greedy(model, x), greedy(model, x)
            rel = cached_vs_uncached(name, model, x)
            same_as_cpu = torch.equal(a, ref)
            tol = 1e-4 if dtype == torch.float32 else 3e-2
            record(f"{name} {dname} on {device}: deterministic greedy, cached = uncached logits",
                   torch.equal(a, b) and rel < tol, rel_logit_diff=f"{rel:.2e}", tolerance=tol,
                   greedy_equals_cpu_fp32=same_as_cpu, seconds=round(time.perf_counter() - t0, 2))
            if dtype == torch.float32:
                record(f"{name} fp32 on {device}: greedy answer equals CPU fp32", same_as_cpu)
            del model
        # a two-device split (GPU + CPU) through accelerate's hooks, then LazyMerge on it and on the GPU
        merged_dir = write_merged(open_merger(zoo[name], zoo[others[name]]), 0.4, tmp / f"{name}_merged",
                                  progress=False)
        disk_sd = cls.from_pretrained(merged_dir).state_dict()
        for storage in ("device", "host"):
            dm = device
            merged_ref = greedy(cls.from_pretrained(merged_dir, device_map=dm).eval(),
                                port_inputs(name, cpu, tok, device, torch.float32))  # same devices, same kernels
            model = cls.from_pretrained(zoo[name], device_map=dm).eval()
            devices = sorted({str(p.device) for p in model.parameters()})
            x = port_inputs(name, model, tok, device, torch.float32)
            base_out = greedy(model, x)
            lazy = LazyMerge(model, zoo[others[name]], "linear", None, {}, storage=storage, base_tokenizer=zoo[name],
                             progress=False)
            lazy.set(0.4)
            sd = model.state_dict()
            bit_equal = all(torch.equal(sd[k].cpu(), disk_sd[k]) for k in disk_sd)
            out = greedy(model, x)
            lazy.set(0.0)
            back = all(torch.equal(sd[k].cpu(), v) for k, v in cpu.state_dict().items())
            again = greedy(model, x)
            record(f"{name} ← {others[name]} LazyMerge α=0.4 on {'+'.join(devices)}, storage={lazy.storage}",
                   bit_equal and torch.equal(out, merged_ref) and back and torch.equal(again, base_out),
                   weights_equal_adamms_merge=bit_equal, generates_as_merged_checkpoint=torch.equal(out, merged_ref),
                   alpha0_is_base=back, alpha0_generates_as_before=torch.equal(again, base_out))
            del model, lazy
        # "cpu" entries beside a GPU: accelerate offloads them (meta parameters) and runs them on the GPU
        whole = greedy(cls.from_pretrained(zoo[name], device_map=device).eval(),
                       port_inputs(name, cpu, tok, device, torch.float32))
        model = cls.from_pretrained(zoo[name], device_map=split_map(cpu, device)).eval()
        kinds = sorted({p.device.type for p in model.parameters()})
        same = torch.equal(greedy(model, port_inputs(name, cpu, tok, device, torch.float32)), whole)
        try:
            LazyMerge(model, zoo[others[name]], base_tokenizer=zoo[name], progress=False)
            refused = "meta" not in kinds  # nothing offloaded (CPU dry run): nothing to refuse
        except AdammsError as e:
            refused = "offloaded" in str(e)
        record(f"{name} with CPU-offloaded layers ({'+'.join(kinds)}): generates as wholly on {device}; LazyMerge "
               "refuses offloaded weights", same and refused, generates_as_whole=same, lazy_refused=refused)
        del model
        # built on the CPU, then the model moves: set() follows it
        model = cls.from_pretrained(zoo[name]).eval()
        lazy = LazyMerge(model, zoo[others[name]], "linear", None, {}, storage="device", base_tokenizer=zoo[name],
                         progress=False)
        model.to(device)
        lazy.set(0.4)
        sd = model.state_dict()
        ok = all(torch.equal(sd[k].cpu(), disk_sd[k]) for k in disk_sd) and next(model.parameters()).device.type != "cpu"
        record(f"{name}: LazyMerge built on CPU follows model.to({device})", ok or device == "cpu")
        del model, lazy
        # the one-command check a user runs on the real checkpoint
        image().save(tmp / "x.png")
        from adamms_eval.ports.check import answer
        text = answer(str(zoo[name]), str(tmp / "x.png"), "Describe this image", None, "bfloat16", "auto", 8)
        record(f"{name}: `python -m adamms_eval.ports.check` (bf16, device_map auto) answers", isinstance(text, str),
               answer=text[:40])


def check_qwen_pair(zoo, device, tmp: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from adamms_eval import LazyMerge
    from adamms_eval.merging.merger import open_merger, write_merged
    base, other = zoo["qwen2_vl"], zoo["llava_ov_hf"]
    merged_dir = write_merged(open_merger(base, other), 0.3, tmp / "qwen_merged", progress=False)
    proc = AutoProcessor.from_pretrained(base)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    x = dict(proc(images=image(), text=proc.apply_chat_template(msgs, add_generation_prompt=True), return_tensors="pt"))
    disk_sd = AutoModelForImageTextToText.from_pretrained(merged_dir).state_dict()
    ref = greedy(AutoModelForImageTextToText.from_pretrained(merged_dir, device_map=device).eval(),
                 {k: v.to(device) for k, v in x.items()})  # the merged checkpoint, on the same device
    for dname, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype, device_map=device).eval()
        lazy = LazyMerge(model, other, "linear", None, {}, base_tokenizer=base, progress=False)
        t0 = time.perf_counter()
        lazy.set(0.3)
        if device != "cpu":
            torch.cuda.synchronize()
        set_s = time.perf_counter() - t0
        xd = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in x.items()}
        out = greedy(model, xd)
        sd = model.state_dict()
        if dtype == torch.float32:
            ok = all(torch.equal(sd[k].cpu(), disk_sd[k]) for k in disk_sd) and torch.equal(out, ref)
            record(f"qwen2_vl ← llava_ov LazyMerge α=0.3 fp32 on {device}: weights and answer equal adamms merge", ok,
                   set_seconds=round(set_s, 4))
        else:  # the merge is computed in the weights' dtype here, so compare with the merged checkpoint rounded
            diff = max((sd[k].float().cpu() - disk_sd[k].to(dtype).float()).abs().max().item() for k in disk_sd)
            record(f"qwen2_vl ← llava_ov LazyMerge α=0.3 bf16 on {device}: weights within bf16 rounding of adamms merge",
                   diff < 0.02, max_abs_weight_diff=f"{diff:.2e}", answer_equals_fp32_merge=torch.equal(out, ref))
        del model, lazy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device here; run on a GPU machine or pass --device cpu for a dry run", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    from adamms_eval.testing.tiny import build_zoo
    import transformers
    env = {"torch": torch.__version__, "transformers": transformers.__version__,
           "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else "none"}
    print(json.dumps(env))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        zoo = build_zoo(Path(tmp) / "zoo", ["qwen2_vl", "llava_ov_hf", "llava15_hf", "cogvlm", "mplug_owl2"])
        for step in (check_ports, check_qwen_pair):
            try:
                step(zoo, a.device, Path(tmp))
            except Exception as e:  # report and go on: one broken check must not hide the others
                import traceback
                traceback.print_exc()
                record(f"{step.__name__} raised", False, error=f"{type(e).__name__}: {e}"[:300])
    failed = [r for r in RESULTS if not r["ok"]]
    print(f"{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed in {time.perf_counter() - t0:.0f} s")
    if a.out:
        Path(a.out).write_text(json.dumps({"env": env, "results": RESULTS}, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
