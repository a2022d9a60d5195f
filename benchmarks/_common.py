"""Shared helpers of the benchmarks: random LLaMA checkpoints, per-process memory sampling, tables.

Memory vocabulary (Linux /proc/PID/status):
- VmHWM / ru_maxrss: peak resident set, including file-backed pages of memory-mapped inputs
  (safetensors files are mmapped, so reading 2.5 GB of weights shows up here without costing RAM).
- RssAnon: anonymous memory only, i.e. what the process itself allocated ("own memory").
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import threading
import time
import zlib
from pathlib import Path

GB = 1e9
SIZES = {  # LlamaForCausalLM shapes; parameter counts are with untied embeddings
    "full": dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=24, num_attention_heads=16),  # 1.35B
    "1b": dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=20, num_attention_heads=16),    # 1.14B
    "small": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16),  # 168M
    # 7B-sized tensors (Qwen2-7B's 152064x3584 embedding, 18944-wide MLP) in one layer: 1.35B params
    "wide": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=1, num_attention_heads=28,
                 vocab_size=152064),
}


def llama_config(size: str):
    from transformers import LlamaConfig
    kw = {"vocab_size": 32000, **SIZES[size]}
    cfg = LlamaConfig(num_key_value_heads=kw["num_attention_heads"], tie_word_embeddings=False,
                      max_position_embeddings=2048, **kw)
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.dtype = "bfloat16"
    return cfg


def build_family(root: Path, size: str, names: list[str], noise: float = 2e-3, seed: int = 0) -> list[Path]:
    """Checkpoints names[0] = θ0 (randn·0.02) and names[i>0] = θ0 + noise·randn, bf16 safetensors, 1 GB shards.

    Built shard by shard for all models at once (RAM: one shard per model), and reused when already built
    with the same configuration (a BUILT marker is written last)."""
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    cfg = llama_config(size)
    dirs = [root / f"{size}-{n}" for n in names]
    stamp = json.dumps({"config": cfg.to_dict(), "noise": noise, "seed": seed, "names": names}, sort_keys=True)
    if all((d / "BUILT").is_file() and (d / "BUILT").read_text() == stamp for d in dirs):
        return dirs
    with torch.device("meta"):
        meta = LlamaForCausalLM(cfg).to(torch.bfloat16).state_dict()
    n_params = sum(t.numel() for t in meta.values())
    print(f"building {len(dirs)} random {size} LLaMA checkpoints ({n_params / 1e9:.2f}B params each) in {root}",
          flush=True)
    split = split_torch_state_dict_into_shards(meta, filename_pattern="model{suffix}.safetensors", max_shard_size="1GB")
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    t0 = time.time()
    for filename, keys in split.filename_to_tensors.items():
        shards = [{} for _ in dirs]
        for k in keys:
            g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(k.encode()))
            base = torch.randn(meta[k].shape, generator=g).mul_(0.02)
            for i, shard in enumerate(shards):
                t = base if i == 0 else base + noise * torch.randn(base.shape, generator=g)
                shard[k] = t.to(torch.bfloat16)
        for d, shard in zip(dirs, shards):
            save_file(shard, str(d / filename), metadata={"format": "pt"})
        print(f"  {filename} ({time.time() - t0:.0f} s)", flush=True)
        del shards
    total = sum(t.numel() * t.element_size() for t in meta.values())
    for d in dirs:
        if split.is_sharded:
            index = {"metadata": {"total_size": total}, "weight_map": split.tensor_to_filename}
            (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        cfg.to_json_file(str(d / "config.json"))
        (d / "BUILT").write_text(stamp)
    return dirs


def weight_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.safetensors"))


def warm_page_cache(dirs) -> float:
    """Read every weight file once (like `cat files > /dev/null`); returns seconds."""
    t0 = time.time()
    for d in dirs:
        for f in weight_files(Path(d)):
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass
    return time.time() - t0


def open_tensor(d: Path, key: str):
    from safetensors import safe_open
    for f in weight_files(d):
        with safe_open(str(f), "pt") as h:
            if key in h.keys():
                return h.get_tensor(key)
    raise KeyError(f"{key} not in {d}")


def read_tensors(d: Path) -> dict:
    """Every tensor of a checkpoint folder's safetensors files, by name."""
    from safetensors import safe_open
    out = {}
    for f in weight_files(d):
        with safe_open(str(f), "pt") as h:
            out.update({k: h.get_tensor(k) for k in h.keys()})
    return out


def same_tensors(a: Path, b: Path) -> bool:
    """The two folders hold the same tensor names with equal dtype, shape and values (shard layout and header
    order may differ)."""
    import torch
    x, y = read_tensors(a), read_tensors(b)
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]) for k in x)


def proc_status(pid="self") -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile in bytes ({} once the process is gone or a zombie)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[k] = int(v.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def run_measured(cmd: list[str], log: Path, env: dict | None = None, interval: float = 0.05) -> dict:
    """Run cmd as a child; wall time, peak RSS (VmHWM) and peak RssAnon, sampled every `interval` s from
    /proc/PID/status. stdout+stderr go to `log`. (wait4's ru_maxrss is not used: Linux carries the
    parent's RSS high-water mark over fork+exec into it.)"""
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        peak = {"VmHWM": 0, "RssAnon": 0}
        done = threading.Event()

        def sample():
            while not done.is_set():
                s = proc_status(p.pid)
                for k in peak:
                    peak[k] = max(peak[k], s.get(k, 0))
                time.sleep(interval)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status = os.waitpid(p.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        th.join()
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"command failed (rc {p.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return {"wall_s": wall, "peak_rss": peak["VmHWM"], "peak_anon": peak["RssAnon"]}


def summary(xs: list[float]) -> dict:
    return {"min": min(xs), "median": statistics.median(xs), "n": len(xs)}


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(x):
        return f"{x:.2f}" if isinstance(x, float) else str(x)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "MISS"
