"""Cost of `--model adamms` in lmms-eval (a benchmark that prints ratios, not a test).

1. Overhead at a fixed α: the same lmms-eval evaluation (simple_evaluate on the offline shapes tasks)
   with `adamms` (base + LazyMerge at α) and with the plain `qwen2_vl` backend on the checkpoint that
   `adamms merge` wrote for that α. Models are loaded before the clock starts (the one-time load of the
   other model is excluded); runs alternate; min and median are reported. Target: within 5%.
2. Search cost: generations spent by alpha=auto (every candidate on a subset of `search_samples`
   inputs, then the task once at the chosen α) against the authors' procedure (the whole benchmark at
   every candidate), measured on the shapes task and computed for the paper's benchmark sizes.

    python benchmarks/bench_search.py [--rows 40] [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

# Test-split sizes of the paper's benchmarks (Table 1), used for the search-cost ratio.
PAPER_BENCHMARKS = {"MMMU val": 900, "MME": 2374, "SEED-Bench image": 14233, "OCRBench": 1000, "TextVQA val": 5000,
                    "OK-VQA val": 5046, "GQA testdev": 12578, "VizWiz val": 4319}


def timed_eval(make_lm, tasks_dir: Path, tasks: list[str], limit: int | None) -> tuple[float, dict]:
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager
    lm = make_lm()
    manager = TaskManager(include_path=str(tasks_dir))
    start = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, bootstrap_iters=0)
    return time.perf_counter() - start, out["samples"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40, help="rows of the generated shapes dataset")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "adamms-bench-search")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from lmms_eval.models import get_model

    from adamms_eval.merging.merger import open_merger, write_merged
    from adamms_eval.search.rule import parse_alphas, DEFAULT_ALPHAS
    from adamms_eval.testing.tiny import build_zoo
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    zoo = build_zoo(a.workdir / "zoo", ["qwen2_lm", "qwen2_vl", "llava_ov_hf"])
    tasks_dir = a.workdir / "tasks"
    if not (tasks_dir / "adamms_shapes" / "data" / "shapes.parquet").exists():
        from adamms_eval.task_folders import write_shapes_tasks
        write_shapes_tasks(tasks_dir, rows=a.rows)
    merged = write_merged(open_merger(zoo["qwen2_vl"], zoo["llava_ov_hf"]), a.alpha, a.workdir / "merged",
                          force=True, progress=False)
    tasks = ["adamms_shapes_color", "adamms_shapes_yesno"]
    adamms_cls, plain_cls = get_model("adamms", force_simple=True), get_model("qwen2_vl", force_simple=True)

    def make_adamms():
        return adamms_cls(base=str(zoo["qwen2_vl"]), other=str(zoo["llava_ov_hf"]), alpha=a.alpha,
                          cache_dir=str(a.workdir / "cache"))

    def make_plain():
        return plain_cls(pretrained=str(merged), device="cpu", device_map="cpu")

    times = {"adamms": [], "qwen2_vl on merged": []}
    for rep in range(a.repeats):
        for name, make in (("adamms", make_adamms), ("qwen2_vl on merged", make_plain)):
            t, samples = timed_eval(make, tasks_dir, tasks, None)
            times[name].append(t)
            print(f"run {rep + 1}/{a.repeats} {name:20} {t:7.2f} s", flush=True)
            answers = {k: [s["filtered_resps"] for s in v] for k, v in samples.items()}
            if name == "adamms":
                ours = answers
            elif answers != ours:
                print("WARNING: answers differ between adamms and the merged checkpoint", flush=True)
    ratio_min = min(times["adamms"]) / min(times["qwen2_vl on merged"])
    ratio_med = statistics.median(times["adamms"]) / statistics.median(times["qwen2_vl on merged"])

    n_alphas = len(parse_alphas(DEFAULT_ALPHAS))
    # Measured: one alpha=auto run; its record counts the generations the search really spent.
    auto = adamms_cls(base=str(zoo["qwen2_vl"]), other=str(zoo["llava_ov_hf"]), alpha="auto",
                      cache_dir=str(a.workdir / f"cache-auto-{time.time_ns()}"))
    records = auto.records
    timed_eval(lambda: auto, tasks_dir, tasks, None)
    spent = sum(r["generations"] for r in records.values()) + a.rows * len(tasks)
    cost = {"shapes, measured": {"inputs": a.rows * len(tasks), "adamms_generations": spent,
                                 "authors_generations": n_alphas * a.rows * len(tasks),
                                 "ratio": n_alphas * a.rows * len(tasks) / spent}}
    for name, n in PAPER_BENCHMARKS.items():
        ours = n_alphas * min(100, n) + n
        theirs = n_alphas * n
        cost[name] = {"inputs": n, "adamms_generations": ours, "authors_generations": theirs, "ratio": theirs / ours}

    print(f"\n## Fixed α={a.alpha}: adamms vs qwen2_vl on the merged checkpoint ({a.repeats} alternating runs, "
          f"{len(tasks)} tasks × {a.rows} inputs, models preloaded)\n")
    print("| model | min s | median s |\n|---|---:|---:|")
    for name, ts in times.items():
        print(f"| {name} | {min(ts):.2f} | {statistics.median(ts):.2f} |")
    print(f"\noverhead ratio adamms / plain: min {ratio_min:.3f}, median {ratio_med:.3f} (target ≤ 1.05)")
    print(f"\n## Search cost: generations with alpha=auto ({n_alphas} candidates × ≤100 inputs + 1 full run) "
          "vs the authors' procedure (full benchmark per candidate)\n")
    print("| task | inputs | adamms | authors | authors / adamms |\n|---|---:|---:|---:|---:|")
    for name, c in cost.items():
        print(f"| {name} | {c['inputs']} | {c['adamms_generations']} | {c['authors_generations']} | {c['ratio']:.2f}× |")
    if a.json:
        a.json.write_text(json.dumps({"times": times, "ratio_min": ratio_min, "ratio_median": ratio_med,
                                      "search_cost": cost}, indent=2))


if __name__ == "__main__":
    main()
