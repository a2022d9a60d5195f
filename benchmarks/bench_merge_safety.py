#!/usr/bin/env python
"""What crash safety costs `adamms merge`: the streaming write with its lock, resumable partial folder and per-shard
manifest (write_merged) against the same write without them (the path before the crash-safety change: shards
straight into a temporary folder, renamed at the end), paired in one process on the same checkpoints.

Variants, run alternately after one warm-up each (imports and page cache the same for all):
- `plain`: no lock, no manifest, no hash (the older path, kept here only as the baseline);
- `crash-safe`: write_merged as shipped (shard hashes taken from the tensors in memory);
- `crash-safe, hash read back`: write_merged hashing each finished shard by reading the file back (before this change).
Prints wall and system time (min / median) and the ratios to `plain`; goal: crash-safe ≤ 1.05× plain.
`--profile` prints the cProfile top functions of one crash-safe merge.

    python benchmarks/bench_merge_safety.py [--size small] [--method linear] [--repeats 5] [--shard-mb 100]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build_family, same_tensors, warm_page_cache  # noqa: E402


def write_plain(merger, lam: float, out: Path, max_shard_size: str) -> Path:
    """The streaming write without crash safety (the code before the crash-safety change)."""
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file
    from adamms_eval.merging.merger import SAFE_INDEX, _copy_side_files
    plan = merger.plan
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    entries = {e.key: e for e in plan.entries}
    meta = {k: torch.empty(e.shape, dtype=e.dtype, device="meta") for k, e in entries.items()}
    split = split_torch_state_dict_into_shards(meta, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    total = sum(t.numel() * t.element_size() for t in meta.values())
    merger.prepare()
    for filename, keys in split.filename_to_tensors.items():
        shard = {k: merger.tensor(entries[k], lam).contiguous() for k in keys}
        save_file(shard, str(tmp / filename), metadata={"format": "pt"})
        del shard
    if split.is_sharded:
        index = {"metadata": {**split.metadata, "total_size": total}, "weight_map": split.tensor_to_filename}
        (tmp / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True))
    _copy_side_files(plan.base.source.path, tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/adamms-bench"))
    ap.add_argument("--size", choices=["full", "small", "wide", "1b"], default="small")
    ap.add_argument("--method", default="linear")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shard-mb", type=int, default=100)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from adamms_eval.merging import partial
    from adamms_eval.merging.merger import open_merger, write_merged
    t0, m1, m2 = build_family(a.workdir.resolve() / "ckpt", a.size, ["theta0", "model1", "model2"])
    params = {} if a.method == "linear" else {"weight": "1", **({"density": "0.5"} if "ties" in a.method or
                                                                 "dare" in a.method else {})}
    lam = 0.5 if a.method == "linear" else 1.0
    shard = f"{a.shard_mb}MB"
    out = a.workdir.resolve() / "out-safety"

    def merger():
        return open_merger(m1, m2, a.method, params, pretrained=t0 if a.method != "linear" else None)

    def read_back(self, filename, tensors=None):
        return shipped_finished(self, filename)  # the file is read back to hash it

    shipped_finished = partial.PartialOutput.finished

    def safe(m):
        partial.PartialOutput.finished = shipped_finished
        return write_merged(m, lam, out, force=True, max_shard_size=shard, progress=False)

    def safe_read_back(m):
        partial.PartialOutput.finished = read_back
        try:
            return write_merged(m, lam, out, force=True, max_shard_size=shard, progress=False)
        finally:
            partial.PartialOutput.finished = shipped_finished

    variants = {"plain": lambda m: write_plain(m, lam, out, shard), "crash-safe": safe,
                "crash-safe, hash read back": safe_read_back}
    if a.profile:
        warm_page_cache([t0, m1, m2])
        pr = cProfile.Profile()
        m = merger()
        pr.enable()
        safe(m)
        pr.disable()
        pstats.Stats(pr).sort_stats("cumulative").print_stats(20)
    times = {k: [] for k in variants}
    sys_times = {k: [] for k in variants}
    reference = None
    for rep in range(a.repeats + 1):  # the first round warms up (page cache, allocator) and is not counted
        for name, run in variants.items():
            m = merger()
            shutil.rmtree(out, ignore_errors=True)
            u0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            run(m)
            wall, u1 = time.perf_counter() - w0, resource.getrusage(resource.RUSAGE_SELF)
            if reference is None:
                reference = a.workdir.resolve() / "out-safety-reference"
                shutil.rmtree(reference, ignore_errors=True)
                out.rename(reference)
            else:  # the baseline writes whole tensors through save_file (another header order): tensors compared
                assert same_tensors(out, reference), f"{name} wrote different tensors"
            if rep:
                times[name].append(wall)
                sys_times[name].append(u1.ru_stime - u0.ru_stime)
                print(f"  #{rep} {name:28} wall {wall:6.2f} s  system {u1.ru_stime - u0.ru_stime:5.2f} s", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(reference, ignore_errors=True)
    print(f"\n### Crash safety cost: {a.method}, {a.size} checkpoints, {a.shard_mb} MB shards, {a.repeats} paired "
          f"rounds (load average {os.getloadavg()[0]:.1f})\n")
    print("| variant | wall min s | wall median s | system median s | wall ratio to plain (min / median) |")
    print("|---|---:|---:|---:|---:|")
    for name in variants:
        r_min = min(times[name]) / min(times["plain"])
        r_med = statistics.median(times[name]) / statistics.median(times["plain"])
        print(f"| {name} | {min(times[name]):.2f} | {statistics.median(times[name]):.2f} | "
              f"{statistics.median(sys_times[name]):.2f} | {r_min:.3f} / {r_med:.3f} |")
    print("\ngoal: crash-safe / plain ≤ 1.05; every variant wrote the same tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
