#!/usr/bin/env python
"""Work lost when `adamms merge` is killed (SIGKILL) part way, and what resuming saves.

A full merge is timed once; then for each fraction f a merge into a fresh --out is SIGKILLed f × the full
merge's writing time after its partial folder appeared (i.e. after start-up), and the same command is rerun.
Per kill: shards finished and recorded at the kill, bytes on disk in the partial folder (what a crash leaked
before resuming existed), the work lost (the killed run's time since its last recorded shard: the manifest's
mtime), the time the rerun spends re-hashing the kept shards, and the rerun's wall time. Without resuming,
all the work up to the kill is lost. Every resumed output is compared byte for byte with the full merge.

    python benchmarks/bench_crash.py                       # 1.14B LLaMA bf16, 200 MB shards
    python benchmarks/bench_crash.py --size small --shard-mb 50

Prints a table; it is not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GB, build_family, markdown_table, warm_page_cache  # noqa: E402

from adamms_eval.merging.partial import file_hash  # noqa: E402


def merge_cmd(m1: Path, m2: Path, out: Path, shard_mb: int) -> list[str]:
    return [sys.executable, "-m", "adamms_eval.cli", "merge", "--base", str(m1), "--other", str(m2), "--alpha", "0.5",
            "--out", str(out), "--max-shard-size", f"{shard_mb}MB", "--quiet"]


def wait_for_partial(outs: Path, out: Path, p) -> float:
    """Seconds until the merge's partial folder appears (start-up: imports, headers, plan)."""
    t0 = time.perf_counter()
    while not list(outs.glob(f".{out.name}.partial-*")) and p.poll() is None:
        time.sleep(0.005)
    return time.perf_counter() - t0


def timed(cmd) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return time.perf_counter() - t0, r.stderr


def tree_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def identical(a: Path, b: Path) -> bool:
    names = sorted(f.name for f in a.iterdir() if f.name != "adamms_merge.json")
    return names == sorted(f.name for f in b.iterdir() if f.name != "adamms_merge.json") and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/adamms-bench"))
    ap.add_argument("--size", choices=["full", "1b", "small"], default="1b")
    ap.add_argument("--shard-mb", type=int, default=200)
    ap.add_argument("--kills", default="0.25,0.5,0.75",
                    help="kill after these fractions of the full merge's writing time (after its start-up)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    m1, m2 = build_family(a.workdir, a.size, ["m1", "m2"])
    warm_page_cache([m1, m2])
    outs = a.workdir / "crash"
    shutil.rmtree(outs, ignore_errors=True)
    outs.mkdir(parents=True)
    t0 = time.perf_counter()
    p = subprocess.Popen(merge_cmd(m1, m2, outs / "full", a.shard_mb), stderr=subprocess.DEVNULL)
    startup_s = wait_for_partial(outs, outs / "full", p)
    assert p.wait() == 0
    full_s = time.perf_counter() - t0
    write_s = full_s - startup_s
    size = tree_bytes(outs / "full")
    shards = len(list((outs / "full").glob("*.safetensors")))
    print(f"full merge: {full_s:.2f} s ({startup_s:.2f} s start-up, {write_s:.2f} s writing), {size / GB:.2f} GB "
          f"in {shards} shards", flush=True)

    rows, results = [], []
    for f in (float(x) for x in a.kills.split(",")):
        out = outs / f"killed-{f}"
        p = subprocess.Popen(merge_cmd(m1, m2, out, a.shard_mb), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_partial(outs, out, p)
        began = time.time()
        time.sleep(f * write_s)
        os.kill(p.pid, signal.SIGKILL)
        killed_at = time.time()
        if p.wait() == 0:
            print(f"kill at {f}: the merge had already finished; skipped", flush=True)
            shutil.rmtree(out, ignore_errors=True)
            continue
        (partial,) = outs.glob(f".{out.name}.partial-*")
        manifest = partial / "adamms_partial.json"
        recorded = json.loads(manifest.read_text())["shards"] if manifest.exists() else {}
        on_disk, kept = tree_bytes(partial), sum(s["bytes"] for s in recorded.values())
        # work lost = what the killed run did after its last recorded shard (the manifest is rewritten per shard)
        lost_s = killed_at - (manifest.stat().st_mtime if manifest.exists() else began)
        t0 = time.perf_counter()
        for name in recorded:
            file_hash(partial / name)  # what the rerun spends re-verifying the kept shards
        verify_s = time.perf_counter() - t0
        resume_s, err = timed(merge_cmd(m1, m2, out, a.shard_mb))
        ok = identical(out, outs / "full") and not list(outs.glob(f".{out.name}.*"))
        r = {"kill_at": f, "killed_after_s": killed_at - began, "shards_kept": len(recorded), "kept_gb": kept / GB,
             "partial_on_disk_gb": on_disk / GB, "lost_s": lost_s, "verify_s": verify_s, "resume_s": resume_s,
             "identical": ok, "resume_message": err.strip().splitlines()[0] if err.strip() else ""}
        results.append(r)
        rows.append([f"{killed_at - began:.1f}", f"{len(recorded)}/{shards}", f"{kept / GB:.2f}", f"{on_disk / GB:.2f}",
                     f"{lost_s:.1f}", f"{verify_s:.2f}", f"{resume_s:.1f}", f"{killed_at - began:.1f}",
                     "yes" if ok else "NO"])
        print(r, flush=True)
        shutil.rmtree(out, ignore_errors=True)
    print()
    print(markdown_table(["killed after (s of writing)", "shards kept", "kept GB", "on disk at kill GB",
                          "work lost (s)", "re-verify (s)", "rerun wall (s)", "lost without resume (s)",
                          "byte-identical"], rows))
    print(f"\nfull merge {full_s:.2f} s (start-up {startup_s:.2f} s), {size / GB:.2f} GB, {shards} shards of "
          f"{a.shard_mb} MB")
    if a.json:
        a.json.write_text(json.dumps({"full_s": full_s, "startup_s": startup_s, "bytes": size, "shards": shards, "kills": results}, indent=2))
    shutil.rmtree(outs / "full", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
