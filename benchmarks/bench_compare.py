#!/usr/bin/env python
"""`adamms compare CONFIG` against one `lmms-eval` command per evaluation, measured in one run.

The per-command procedure is what the authors' scripts do: each original model and each fixed-coefficient row is one
`lmms-eval` command (one model load each); a searched row (`auto`, `oracle`) is a full evaluation at every
candidate, one command per candidate, whose answers are then compared (auto) or scored (oracle). Commands that
would evaluate the same (method, parameters, coefficient) twice are run once (the oracle sweep and the AdaMMS
search share the linear candidates), which favours the per-command side. Both sides start from empty caches and
output folders, with one thread per process (as `make reproduce`). Also checks that every fixed row scores the
same both ways.

    python benchmarks/bench_compare.py [configs/zoo.yaml]

Prints the two wall times and their ratio; it is not a test. Takes ~10 minutes on the zoo with 2 cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def eval_key(row, coefficient=None) -> tuple:
    """One evaluation: an original model, or (method, parameters, coefficient)."""
    if row.original:
        return ("original", row.original)
    return ("merge", row.method, tuple(sorted(row.params.items())), round(coefficient, 6))


def commands(p) -> dict[tuple, list[str]]:
    """(row kind, method, params, coefficient) -> the lmms-eval --model/--model_args of that evaluation."""
    from adamms_eval.compare.runner import Runner, _method_key
    cfg, out = p.cfg, {}
    for row in p.rows:
        if row.original:
            path = cfg["base"] if row.original == "base" else cfg["other"]
            backend = p.backend if row.original == "base" else p.other_backend
            out[eval_key(row)] = ["--model", backend, "--model_args", f"pretrained={path}"]
            continue
        settings = p.sessions[_method_key(row)][0]
        if isinstance(row.rule, float):
            points = [row.rule]
        elif row.rule is None:
            points = [Runner._default_coefficient(row, settings)]
        else:  # auto / oracle: a full evaluation at every candidate
            points = settings.alphas
        for c in points:
            args = {"base": cfg["base"], "other": cfg["other"], "method": row.method, **row.params,
                    settings.coefficient: f"{c:g}"}
            if cfg.get("pretrained"):
                args["pretrained"] = cfg["pretrained"]
            out[eval_key(row, c)] = ["--model", "adamms", "--model_args", ",".join(f"{k}={v}" for k, v in args.items())]
    return out


def score_of(folder: Path, task: str, metric: str) -> float:
    (res,) = folder.rglob("*_results.json")
    vals = json.loads(res.read_text())["results"][task]
    return 100.0 * float(next(v for k, v in vals.items() if k.split(",")[0] == metric))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config = Path(argv[0] if argv else REPO / "configs" / "zoo.yaml").resolve()
    import torch
    from adamms_eval import compare
    p, cuda = compare.plan(config), torch.cuda.is_available()
    includes = p.cfg.get("include_path") or []
    includes = [includes] if isinstance(includes, str) else includes
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cmds = commands(p)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        per_command = {}
        for i, (key, model) in enumerate(cmds.items()):
            folder = tmp / "cli" / str(i)
            cmd = [str(BIN / "lmms-eval"), *model, "--tasks", ",".join(p.tasks),
                   "--output_path", str(folder), "--batch_size", str(p.cfg.get("batch_size", 1))]
            for inc in includes:
                cmd += ["--include_path", str((config.parent / inc).resolve())]
            if "adamms" in model:
                cmd[cmd.index("--model_args") + 1] += f",cache_dir={tmp / 'cli_cache' / str(i)}"
            elif not cuda:  # what compare does for a backend without a GPU
                cmd[cmd.index("--model_args") + 1] += ",device_map=cpu"
            if not cuda:
                cmd += ["--device", "cpu"]
            if p.cfg.get("limit"):
                cmd += ["--limit", str(p.cfg["limit"])]
            s = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
            per_command[key] = (time.perf_counter() - s, folder)
            if r.returncode or not list(folder.rglob("*_results.json")):
                print(f"command {i} failed:\n{' '.join(cmd)}\n{r.stderr[-3000:]}", file=sys.stderr)
                return 1
            print(f"  [{i + 1}/{len(cmds)}] {key[0]} {key[1]} {key[-1]}: {per_command[key][0]:.1f} s", flush=True)
        cli_s = time.perf_counter() - t0
        raw = yaml.safe_load(config.read_text())
        raw.update(output=str(tmp / "compare"), cache_dir=str(tmp / "compare_cache"),
                   include_path=[str((config.parent / inc).resolve()) for inc in includes])
        for k in ("base", "other", "pretrained"):
            if raw.get(k):
                raw[k] = p.cfg[k]
        cfg2 = tmp / "config.yaml"
        cfg2.write_text(yaml.safe_dump(raw))
        s = time.perf_counter()
        r = subprocess.run([str(BIN / "adamms"), "compare", str(cfg2)], capture_output=True, text=True, env=ENV)
        compare_s = time.perf_counter() - s
        if r.returncode:
            print(f"adamms compare failed:\n{r.stderr[-3000:]}", file=sys.stderr)
            return 1
        data = json.loads((tmp / "compare" / "comparison.json").read_text())
        mismatches, checked = [], 0
        for row in p.rows:  # fixed rows: the same score both ways
            if row.rule in ("auto", "oracle"):
                continue
            c = None if row.original else (
                row.rule if isinstance(row.rule, float) else compare.Runner._default_coefficient(row, None))
            key = eval_key(row, c)
            for task in p.tasks:
                checked += 1
                a, b = score_of(per_command[key][1], task, p.metrics[task]), data["scores"][row.name][task]
                if abs(a - b) > 1e-9:
                    mismatches.append(f"{row.name}/{task}: {a} vs {b}")
    print(f"\nconfig {config.name}: {len(p.rows)} rows × {len(p.tasks)} tasks; load average {load0:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end")
    print("| procedure | model loads / commands | wall (s) |\n|---|---:|---:|")
    print(f"| one `lmms-eval` command per evaluation | {len(cmds)} | {cli_s:.0f} |")
    print(f"| `adamms compare` (one process) | 1 + other | {compare_s:.0f} |")
    print(f"per-command / compare: {cli_s / compare_s:.2f}x; fixed-row scores equal both ways: "
          f"{checked - len(mismatches)}/{checked}" + (f" (differ: {mismatches[:5]})" if mismatches else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
