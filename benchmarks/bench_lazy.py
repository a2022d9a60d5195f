#!/usr/bin/env python
"""LazyMerge.set(λ) vs writing + reloading a merged checkpoint per coefficient, on a ~1.1B LLaMA (bf16).

Timed in one process per storage mode (so peak memory is per mode), on CUDA when available, else CPU:
  (a) LazyMerge.set(λ) over several λ                      (in place, linear path)
  (b) reference per coefficient: save_pretrained(model at λ) + from_pretrained, and
      `adamms merge` to disk (write_merged) + from_pretrained
  (c) bandwidth bound: param.copy_(B) for every merged parameter (same bytes, same device)
Ratios (b)/(a) (target >= 100x) and (a)/(c) (target <= 2x), memory() and measured bytes per parameter.

    python benchmarks/bench_lazy.py                 # 1.14B params, ~5 min on 2 CPU cores
    python benchmarks/bench_lazy.py --size small --json /tmp/bench_lazy.json

Prints ratios measured in this run; it is not a test. On CPU from_pretrained memory-maps the
checkpoint, so a reload is cheap once the file is in the page cache: the 100x target is a GPU one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GB, build_family, markdown_table, open_tensor, proc_status, run_measured, summary, verdict, warm_page_cache  # noqa: E402

TARGETS = {"reference_over_set": 100.0, "set_over_copy": 2.0}


def child(a) -> None:
    """One storage mode, in its own process: timings and memory snapshots, as JSON to a.child_json."""
    import torch
    from transformers import LlamaForCausalLM
    from adamms_eval.merging.lazy import LazyMerge
    from adamms_eval.merging.merger import open_merger, write_merged

    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    base, other = Path(a.base), Path(a.other)
    out: dict = {"storage": a.child, "device": str(dev), "snap": {}, "times": {}}

    def snap(name):
        out["snap"][name] = proc_status()
        if dev.type == "cuda":
            out["snap"][name]["cuda_max_allocated"] = torch.cuda.max_memory_allocated()

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    snap("imports")
    model = LlamaForCausalLM.from_pretrained(base, dtype=torch.bfloat16).to(dev)
    snap("loaded")
    lm = None

    def build():
        nonlocal lm
        lm = LazyMerge(model, other, storage=a.child, progress=False)
    out["times"]["lazymerge_build"] = [timed(build)]
    snap("built")
    out["memory"] = lm.memory()
    lambdas = [float(x) for x in a.lambdas.split(",")]
    out["times"]["first_set"] = [timed(lambda: lm.set(lambdas[0]))]  # pays copy-on-write of mmapped weights on CPU
    params = dict(model.named_parameters())
    with torch.no_grad():
        def copy_all():
            for key, path in lm.paths.items():
                params[key].copy_(path.b, non_blocking=True)
        for _ in range(a.repeats):  # interleaved, so that load from other processes hits both alike
            for lam in lambdas:
                out["times"].setdefault("set", []).append(timed(lambda: lm.set(lam)))
                out["times"].setdefault("copy", []).append(timed(copy_all))
        lm.set(1.0)  # sanity: the end of the linear path is the other model
        key = "model.layers.0.mlp.up_proj.weight"
        out["set_1_equals_other"] = bool(torch.equal(params[key].cpu(), open_tensor(other, key)))
    snap("after_set")
    if a.reference:
        tmp = Path(a.workdir) / f"reload-{a.child}"
        merger = open_merger(base, other, "linear")
        for i in range(a.ref_repeats):
            lam = 0.25 + 0.5 * (i % 2)
            lm.set(lam)
            for name, write in (("save_pretrained", lambda: model.save_pretrained(tmp)),
                                ("adamms_merge", lambda: write_merged(merger, lam, tmp, force=True, progress=False))):
                shutil.rmtree(tmp, ignore_errors=True)
                os.sync()
                t_write = timed(write)
                t_load = timed(lambda: LlamaForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16).to(dev))
                out["times"].setdefault(f"{name}_write", []).append(t_write)
                out["times"].setdefault(f"{name}_load", []).append(t_load)
                out["times"].setdefault(f"{name}+load", []).append(t_write + t_load)
        shutil.rmtree(tmp, ignore_errors=True)
    Path(a.child_json).write_text(json.dumps(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/adamms-bench"), help="checkpoints and scratch")
    ap.add_argument("--size", choices=["1b", "small"], default="1b", help="1b: 1.14B params, small: 168M")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    ap.add_argument("--storages", default="device,host", help="LazyMerge storage modes, one process each")
    ap.add_argument("--lambdas", default="0.5,0.1,0.9,0.3,0.7", help="coefficients for set()")
    ap.add_argument("--repeats", type=int, default=3, help="rounds over --lambdas (each set() followed by a copy (c))")
    ap.add_argument("--ref-repeats", type=int, default=2, help="write+reload rounds for (b)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints (reused by the next run)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-json", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--other", help=argparse.SUPPRESS)
    ap.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.child:
        child(a)
        return 0

    from adamms_eval.runtime import default_device
    device = default_device() if a.device == "auto" else a.device
    started, load0 = time.time(), os.getloadavg()[0]
    work = a.workdir.resolve()
    base, other = build_family(work / "ckpt", a.size, ["base", "other"])
    storages = [s.strip() for s in a.storages.split(",") if s.strip()]
    results = {}
    try:
        for i, storage in enumerate(storages):
            print(f"warming the page cache: {warm_page_cache([base, other]):.1f} s; running storage={storage} "
                  f"on {device}", flush=True)
            cj = work / f"lazy-{storage}.json"
            cmd = [sys.executable, __file__, "--child", storage, "--child-json", str(cj), "--base", str(base),
                   "--other", str(other), "--device", device, "--workdir", str(work), "--lambdas", a.lambdas,
                   "--repeats", str(a.repeats), "--ref-repeats", str(a.ref_repeats)] + (["--reference"] if i == 0 else [])
            proc = run_measured(cmd, work / f"lazy-{storage}.log", {"TQDM_DISABLE": "1"})
            results[storage] = {**json.loads(cj.read_text()), "process": proc}
    finally:
        if not a.keep:
            shutil.rmtree(work / "ckpt", ignore_errors=True)

    first = results[storages[0]]
    params = first["memory"]["merged_parameters"]
    rows, stats = [], {}
    for storage, r in results.items():
        for name, xs in r["times"].items():
            if storage == storages[0] or name in ("set", "first_set", "copy", "lazymerge_build"):
                s = summary(xs)
                stats[f"{name} [{storage}]"] = s
                rows.append([f"{name} [storage={storage}]", s["n"], s["min"], s["median"]])
    print(f"\n### LazyMerge benchmark: {a.size}, {params / 1e9:.2f}B merged params on {device} "
          f"({time.time() - started:.0f} s total; load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} "
          f"at end)\n")
    print(markdown_table(["step", "n", "min (s)", "median (s)"], rows))

    mrows = []
    for storage, r in results.items():
        sn, mem = r["snap"], r["memory"]
        d_built = (sn["built"]["RssAnon"] - sn["loaded"]["RssAnon"]) / params
        d_set = (sn["after_set"]["RssAnon"] - sn["loaded"]["RssAnon"]) / params
        mrows.append([storage, f"{mem['bytes'] / GB:.2f}", f"{mem['bytes_per_parameter']:.2f}",
                      f"{sn['loaded']['RssAnon'] / GB:.2f}", f"{sn['built']['RssAnon'] / GB:.2f} (+{d_built:.2f} B/p)",
                      f"{sn['after_set']['RssAnon'] / GB:.2f} (+{d_set:.2f} B/p)", f"{sn['after_set']['RssFile'] / GB:.2f}",
                      f"{sn['after_set']['VmHWM'] / GB:.2f}", f"{r['process']['peak_rss'] / GB:.2f}",
                      f"{r['process']['peak_anon'] / GB:.2f}", r["set_1_equals_other"]])
    print()
    print(markdown_table(["storage", "memory() GB", "memory() B/param", "RssAnon loaded GB", "RssAnon built GB",
                          "RssAnon after set GB", "RssFile after set GB", "VmHWM after set GB",
                          "process peak RSS GB", "process peak RssAnon GB", "set(1)==other"], mrows))

    st = {k: stats[f"{k} [{storages[0]}]"] for k in ("set", "copy", "save_pretrained+load", "adamms_merge+load")}
    fastest = min(("save_pretrained+load", "adamms_merge+load"), key=lambda k: st[k]["median"])

    def ratio(num, den):
        return st[num]["min"] / st[den]["min"], st[num]["median"] / st[den]["median"]

    lo, med = ratio(fastest, "set")
    ratios = [[f"(b)/(a) reference ({fastest}, the faster) / set", f"{lo:.1f}x min, {med:.1f}x median",
               f">= {TARGETS['reference_over_set']:.0f}x", verdict(lo, TARGETS["reference_over_set"], True)]]
    for ref in ("save_pretrained+load", "adamms_merge+load"):
        lo, med = ratio(ref, "set")
        ratios.append([f"(b)/(a) with {ref}", f"{lo:.1f}x min, {med:.1f}x median", "", ""])
    lo, med = ratio("set", "copy")
    ratios.append(["(a)/(c) set / plain copy", f"{lo:.2f}x min, {med:.2f}x median",
                   f"<= {TARGETS['set_over_copy']:.0f}x", verdict(lo, TARGETS["set_over_copy"], False)])
    ratios.append(["set() effective bandwidth (read A, B, write θ; min time)",
                   f"{3 * 2 * params / st['set']['min'] / GB:.1f} GB/s", "", ""])
    print()
    print(markdown_table(["ratio", "value", "target", ""], ratios))
    if a.json:
        a.json.write_text(json.dumps({"results": results, "stats": stats, "ratios": ratios, "targets": TARGETS},
                                     indent=2))
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
