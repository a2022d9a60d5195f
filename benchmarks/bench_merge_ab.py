#!/usr/bin/env python
"""`adamms merge` at two git revisions, paired: the same command on the same checkpoints, alternating A and B, each
run its own process (imports included, as a user runs it), page cache warmed and dirty pages synced before each.

The older revision is checked out with `git worktree` into a temporary folder and imported from there
(PYTHONPATH, this environment's packages); the newer one is this checkout unless --new names a revision.
Prints wall and system time per run, min / median, and the ratio new / old (min / median); checks that both
revisions wrote the same tensors. Use it for "what did this change cost": e.g. crash safety
(`--old 4ead725^`, the commit before it) or a speed change (`--old HEAD~3`).

    python benchmarks/bench_merge_ab.py --old 4ead725^ [--new HEAD] [--size full] [--methods linear] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build_family, markdown_table, same_tensors, warm_page_cache  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def checkout(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(into), rev], check=True,
                   capture_output=True)
    return into


def merge_args(method: str, t0: Path, m1: Path, m2: Path, out: Path, shard_mb: int) -> list[str]:
    args = ["merge", "--base", str(m1), "--other", str(m2), "--out", str(out), "--quiet",
            "--max-shard-size", f"{shard_mb}MB", "--force"]
    if method == "linear":
        return args + ["--alpha", "0.5"]
    density = ["--param", "density=0.5"] if method in ("ties", "dare_ties", "dare_linear") else []
    return args + ["--method", method, "--pretrained", str(t0), "--param", "weight=1", *density]


def run_once(code: Path, args: list[str]) -> tuple[float, float]:
    """Wall and system seconds of one `adamms merge` importing adamms_eval from `code`."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from adamms_eval.cli import main; sys.exit(main())", *args],
                   env=env, check=True, stdout=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime - before.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="git revision of the baseline")
    ap.add_argument("--new", help="git revision to compare (default: this checkout as it is)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/adamms-bench"))
    ap.add_argument("--size", choices=["full", "small", "wide", "1b"], default="full")
    ap.add_argument("--methods", default="linear")
    ap.add_argument("--repeats", type=int, default=5, help="paired rounds counted (one more warms up)")
    ap.add_argument("--shard-mb", type=int, default=500)
    a = ap.parse_args()
    work = a.workdir.resolve()
    t0, m1, m2 = build_family(work / "ckpt", a.size, ["theta0", "model1", "model2"])
    tmp = Path(tempfile.mkdtemp(prefix="adamms-ab-"))
    rows = []
    try:
        code = {"old": checkout(a.old, tmp / "old"), "new": checkout(a.new, tmp / "new") if a.new else REPO}
        for method in [m.strip() for m in a.methods.split(",") if m.strip()]:
            times = {side: [] for side in code}
            sys_times = {side: [] for side in code}
            for rnd in range(a.repeats + 1):  # round 0 warms up (imports' .pyc files, page cache) and is not counted
                for side in (("old", "new") if rnd % 2 == 0 else ("new", "old")):  # alternate who goes first
                    out = work / f"ab-{side}"
                    shutil.rmtree(out, ignore_errors=True)
                    warm_page_cache([t0, m1, m2] if method != "linear" else [m1, m2])
                    os.sync()
                    wall, stime = run_once(code[side], merge_args(method, t0, m1, m2, out, a.shard_mb))
                    if rnd:
                        times[side].append(wall)
                        sys_times[side].append(stime)
                        print(f"  {method} #{rnd} {side}: wall {wall:6.2f} s, system {stime:5.2f} s", flush=True)
                if rnd == 0 and not same_tensors(work / "ab-old", work / "ab-new"):
                    print(f"  {method}: the two revisions wrote different tensors", flush=True)
            for side in code:
                shutil.rmtree(work / f"ab-{side}", ignore_errors=True)
            o, n = times["old"], times["new"]
            rows.append([method, f"{min(o):.2f} / {statistics.median(o):.2f}", f"{min(n):.2f} / {statistics.median(n):.2f}",
                         f"{statistics.median(sys_times['old']):.2f} / {statistics.median(sys_times['new']):.2f}",
                         f"{min(n) / min(o):.3f} / {statistics.median(n) / statistics.median(o):.3f}"])
    finally:
        for side in ("old", "new"):
            if (tmp / side).exists():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / side)],
                               capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n### adamms merge, {a.old} (old) vs {a.new or 'this checkout'} (new): {a.size} checkpoints, "
          f"{a.repeats} paired rounds, load average {os.getloadavg()[0]:.1f}\n")
    print(markdown_table(["method", "old wall min / median s", "new wall min / median s",
                          "system median old / new s", "new / old (min / median)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
