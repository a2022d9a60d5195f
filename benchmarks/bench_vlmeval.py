"""Cost of the AdaMMS model inside VLMEvalKit (a benchmark that prints ratios, not a test).

1. Overhead at a fixed α: VLMEvalKit's own inference loop (`vlmeval.inference.infer_data`) over the
   offline shapes dataset with `AdammsVLM(base, other, alpha)` and with the same wrapper, unmerged, on the
   checkpoint `adamms merge` wrote for that α. Models are built before the clock starts; runs alternate;
   min and median are reported. Target: within 5%.
2. Search cost: generations spent by alpha=auto (every candidate on a `search_samples` subset, then the
   dataset once at the chosen α) against the authors' procedure (the whole benchmark at every candidate),
   measured on the shapes dataset and computed for the sizes of the paper's VLMEvalKit benchmarks.

    python benchmarks/bench_vlmeval.py [--rows 40] [--repeats 3] [--max-new-tokens 16] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Sizes of the paper's VLMEvalKit benchmarks for its Qwen2-VL pair (VLMEvalKit TSV rows).
PAPER_BENCHMARKS = {"MMMU_DEV_VAL": 1050, "MME": 2374, "SEEDBench_IMG": 14233, "OCRBench": 1000, "TextVQA_VAL": 5000}
DATASET = "AdammsShapes_GQA"


def timed_infer(model, name: str, dataset, work: Path) -> tuple[float, dict]:
    from vlmeval.inference import infer_data
    from vlmeval.smp import load
    out = work / f"{name}.pkl"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    infer_data(model=model, model_name=name, work_dir=str(work), dataset=dataset, out_file=str(out))
    return time.perf_counter() - start, load(str(out))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable timings on a shared machine)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "adamms-bench-vlmeval")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["LMUData"] = str(a.workdir / "lmu")
    subprocess.run([sys.executable, str(REPO / "tasks" / "make_vlmeval_datasets.py"), "--rows", str(a.rows),
                    "--out", os.environ["LMUData"]], check=True, capture_output=True)

    import torch
    torch.set_num_threads(a.threads)
    import adamms_eval.harness.vlmeval.registry  # noqa: F401  (registers the datasets)
    from vlmeval.dataset import build_dataset

    from adamms_eval.merging.merger import open_merger, write_merged
    from adamms_eval.testing.tiny import build_zoo
    from adamms_eval.harness.vlmeval.wrappers import AdammsVLM

    zoo = build_zoo(a.workdir / "zoo", ["qwen2_vl", "llava_ov_hf"])
    merged = a.workdir / f"merged_{a.alpha}"
    if not merged.exists():
        write_merged(open_merger(zoo["qwen2_vl"], zoo["llava_ov_hf"]), a.alpha, merged, progress=False)
    dataset = build_dataset(DATASET)
    work = a.workdir / "work"
    work.mkdir(parents=True, exist_ok=True)
    cache = a.workdir / "cache"
    ours = AdammsVLM(str(zoo["qwen2_vl"]), str(zoo["llava_ov_hf"]), alpha=a.alpha, max_new_tokens=a.max_new_tokens,
                     cache_dir=str(cache), search_output=str(work))
    ref = AdammsVLM(str(merged), max_new_tokens=a.max_new_tokens)

    times = {"adamms": [], "merged": []}
    answers = {}
    for _ in range(a.repeats):
        for name, model in (("adamms", ours), ("merged", ref)):
            t, answers[name] = timed_infer(model, name, dataset, work)
            times[name].append(t)
    same = answers["adamms"] == answers["merged"]
    print(f"fixed alpha={a.alpha}, {a.rows} rows of {DATASET}, max_new_tokens={a.max_new_tokens}, "
          f"{a.repeats} alternating runs; identical predictions: {same}")
    for name, ts in times.items():
        print(f"  {name:7s} min {min(ts):.2f} s  median {statistics.median(ts):.2f} s")
    print(f"  ratio adamms/merged: min {min(times['adamms']) / min(times['merged']):.3f}  "
          f"median {statistics.median(times['adamms']) / statistics.median(times['merged']):.3f}")

    # search cost: alpha=auto on the same dataset (fresh cache), generations from the record
    auto = AdammsVLM(str(zoo["qwen2_vl"]), str(zoo["llava_ov_hf"]), alpha="auto", max_new_tokens=a.max_new_tokens,
                     cache_dir=str(a.workdir / f"cache_auto_{time.time_ns()}"), search_output=str(work))
    _, _ = timed_infer(auto, "auto", dataset, work)
    rec = auto.session.records[DATASET]
    n, k = rec["task_size"], len(rec["candidates"])
    print(f"\nsearch cost in generations ({k} candidates, search_samples=100):")
    print(f"  {DATASET} (measured): adamms {rec['generations'] + n} (search {rec['generations']} + run {n}), "
          f"authors {k * n}, authors/adamms {k * n / (rec['generations'] + n):.2f}x")
    for name, size in PAPER_BENCHMARKS.items():
        ours_n = k * min(100, size) + size
        print(f"  {name:14s} N={size:6d}: adamms {ours_n:6d}  authors {k * size:6d}  authors/adamms "
              f"{k * size / ours_n:.2f}x")


if __name__ == "__main__":
    main()
