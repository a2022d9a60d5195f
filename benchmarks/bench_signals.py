"""What the confidence signals add to an `alpha=auto` search (a benchmark that prints ratios, not a test).

The same lmms-eval evaluation with `--model adamms alpha=auto` (tiny Qwen2-VL ← LLaVA-OneVision, offline shapes
tasks), each run with a fresh answer cache so every candidate's subset answers are generated: once with the paper's
rule alone, once also recording nll and entropy (one teacher-forced pass per subset answer, no second generation).
Runs alternate; min and median are reported, and whether both runs chose the same α (they must: the recorded
signals never change the choice).

    python benchmarks/bench_signals.py [--rows 40] [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40, help="rows of the generated shapes dataset")
    ap.add_argument("--samples", type=int, default=20, help="search_samples")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "adamms-bench-signals")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    from adamms_eval.testing.tiny import build_zoo
    torch.set_num_threads(1)
    zoo = build_zoo(a.workdir / "zoo", ["qwen2_lm", "qwen2_vl", "llava_ov_hf"])
    tasks_dir = a.workdir / "tasks"
    if not (tasks_dir / "adamms_shapes" / "data" / "shapes.parquet").exists():
        from adamms_eval.task_folders import write_shapes_tasks
        write_shapes_tasks(tasks_dir, rows=a.rows)
    tasks = ["adamms_shapes_color"]
    manager = TaskManager(include_path=str(tasks_dir))
    cls = get_model("adamms", force_simple=True)
    variants = {"consistency only": "", "+ nll, entropy recorded": "nll;entropy"}
    times, chosen = {k: [] for k in variants}, {k: [] for k in variants}
    for rep in range(a.repeats):
        for name, signals in variants.items():
            lm = cls(base=str(zoo["qwen2_vl"]), other=str(zoo["llava_ov_hf"]), alpha="auto", search_samples=a.samples,
                     record_signals=signals, cache_dir=str(a.workdir / f"cache-{time.time_ns()}"))
            start = time.perf_counter()
            simple_evaluate(model=lm, tasks=tasks, task_manager=manager, bootstrap_iters=0)
            times[name].append(time.perf_counter() - start)
            rec = lm.session.records[tasks[0]]
            chosen[name].append(rec["alpha"])
            picks = {k: v.get("alpha", v.get("unavailable")) for k, v in (rec.get("signals") or {}).items()}
            print(f"run {rep + 1}/{a.repeats} {name:26} {times[name][-1]:7.2f} s  α={rec['alpha']} {picks}",
                  flush=True)
    base, extra = variants
    ratio_min = min(times[extra]) / min(times[base])
    ratio_med = statistics.median(times[extra]) / statistics.median(times[base])
    print(f"\n## alpha=auto on {tasks[0]} ({a.rows} inputs, search_samples={a.samples}, 7 candidates, "
          f"{a.repeats} alternating runs, fresh cache each)\n")
    print("| search | min s | median s | α chosen |\n|---|---:|---:|---|")
    for name, ts in times.items():
        print(f"| {name} | {min(ts):.2f} | {statistics.median(ts):.2f} | {sorted(set(chosen[name]))} |")
    print(f"\nratio with scoring / without: min {ratio_min:.3f}, median {ratio_med:.3f}; same α: "
          f"{chosen[base] == chosen[extra]}")
    if a.json:
        a.json.write_text(json.dumps({"times": times, "chosen": chosen, "ratio_min": ratio_min,
                                      "ratio_median": ratio_med}, indent=2))


if __name__ == "__main__":
    main()
