#!/usr/bin/env python
"""DARE's counter-based masks against the torch.rand stream they replaced: the same dare_ties merge (random LLaMA
checkpoints from _common.build_family, density 0.5, l1 rescale) in one process, alternating, min / median.

The old masks (one torch.Generator per tensor and model, drawn over the flat tensor in order, float64 L1 sums) are
kept here only as the baseline. The masks differ (another generator), so the outputs are not compared.

    python benchmarks/bench_dare_masks.py [--size small] [--repeats 2] [--method dare_ties]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build_family, warm_page_cache  # noqa: E402


def old_generators(self, key, n):
    base = self.p["seed"] * 1_000_003 + zlib.crc32(key.encode()) * 2
    import torch
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def old_keep(self, tau, g):
    import torch
    return tau.mul_(torch.rand(tau.numel(), generator=g).lt_(self.p["density"]).view(tau.shape))


def old_rescales(self, key, models, theta0):
    import torch
    from adamms_eval.merging.kernels import task_vector_chunks
    total, kept = [0.0] * len(models), [0.0] * len(models)
    gens = old_generators(self, key, len(models))
    for _, _, taus in task_vector_chunks(theta0, models):
        for i, (t, g) in enumerate(zip(taus, gens)):
            total[i] += float(t.abs().sum(dtype=torch.float64))
            kept[i] += float(old_keep(self, t, g).abs().sum(dtype=torch.float64))
    return [a / b if b > 0 else 1.0 for a, b in zip(total, kept)], old_generators(self, key, len(models))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/adamms-bench"))
    ap.add_argument("--size", choices=["full", "small", "wide", "1b"], default="small")
    ap.add_argument("--method", default="dare_ties", choices=["dare_ties", "dare_linear"])
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    from adamms_eval.merging.merger import open_merger, write_merged
    from adamms_eval.merging.methods import dare
    t0, m1, m2 = build_family(a.workdir.resolve() / "ckpt", a.size, ["theta0", "model1", "model2"])
    warm_page_cache([t0, m1, m2])
    out = a.workdir.resolve() / "out-dare"
    new = {k: dare._Dare.__dict__[k] for k in ("_masks", "_keep", "_rescales")}
    old = {"_masks": old_generators, "_keep": old_keep, "_rescales": old_rescales}
    times: dict[str, list[float]] = {"torch.rand stream (before)": [], "counter-based (now)": []}
    for rep in range(a.repeats + 1):  # the first round warms up and is not counted
        for name, impl in zip(times, (old, new)):
            for k, v in impl.items():
                setattr(dare._Dare, k, v)
            m = open_merger(m1, m2, a.method, {"weight": "1", "density": "0.5"}, pretrained=t0)
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            write_merged(m, 1.0, out, force=True, max_shard_size="500MB", progress=False)
            if rep:
                times[name].append(time.perf_counter() - start)
                print(f"  #{rep} {name:28} {times[name][-1]:6.2f} s", flush=True)
    for k, v in new.items():
        setattr(dare._Dare, k, v)
    shutil.rmtree(out, ignore_errors=True)
    (o, n) = times.values()
    print(f"\n{a.method}, {a.size}: before min {min(o):.2f} s / median {statistics.median(o):.2f} s; now min "
          f"{min(n):.2f} s / median {statistics.median(n):.2f} s; speed-up min {min(o) / min(n):.2f}x, median "
          f"{statistics.median(o) / statistics.median(n):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
