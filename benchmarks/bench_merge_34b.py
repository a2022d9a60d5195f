#!/usr/bin/env python
"""`adamms merge` of the Table 6 pair, Cambrian-34B <- Yi-VL-34B, at full tensor size: the process's own memory.

The inputs are header-only sparse safetensors of the released layouts (tests/fixtures/released/: every key and
shape of the float32 Cambrian-34B and the bfloat16 Yi-VL-34B, the data a hole that reads as zeros), so no 200 GB
of weights are needed. The merge runs as a subprocess whose shards go to a sink (/dev/null: every block is merged
and serialised, nothing is stored; an empty file stands in for each shard in the partial-output manifest). Memory
as in bench_merge.py: peak RssAnon ("own memory", sampled every 50 ms) and peak RSS (VmHWM, includes the mmapped
input pages). Side by side in one run: the block-by-block writer as shipped, and the same writer with one block
per tensor (what holding whole tensors costs: a float32 embed_tokens / lm_head is 1.8 GB each).

    python benchmarks/bench_merge_34b.py                 # 4 decoder layers (+ full embed, lm_head, connector)
    python benchmarks/bench_merge_34b.py --layers 60     # the whole model (~15-30 min on 2 cores)

Peak memory is per tensor, so 4 layers show the same peak as 60; --layers 60 also gives the full wall time.
Prints measured numbers; it is not a test. Target: own memory < 2 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests"), str(HERE.parent / "tests" / "fixtures" / "released")]
from _common import GB, markdown_table, run_measured, verdict  # noqa: E402

TARGET_GB = 2.0
SINK = """
import os, sys
import adamms_eval.merging.merger as m
import adamms_eval.merging.stream as s
if os.environ.get("ROW_BYTES"):
    s.ROW_BYTES = int(os.environ["ROW_BYTES"])
real = m.write_safetensors
def to_sink(path, *args, **kwargs):
    real(os.devnull, *args, **kwargs)  # every block merged and serialised; the bytes go nowhere
    open(path, "wb").close()           # an empty shard file for the partial-output manifest
m.write_safetensors = to_sink
from adamms_eval.cli import main
sys.exit(main(sys.argv[1:]))
"""


def sparse_checkpoint(name: str, root: Path, layers: int) -> Path:
    """The released layout of `name` with its first `layers` decoder layers, as header-only sparse shards."""
    import layouts
    from helpers import write_header_only_safetensors
    cfg, _ = layouts.load(name)
    cfg = {**cfg, "num_hidden_layers": layers}
    shapes = layouts.shapes(name, cfg)
    dtype = {k: layouts.dtype_of(k, cfg) for k in shapes}
    sizes = {k: layouts.DTYPE_BYTES[dtype[k]] * _numel(s) for k, s in shapes.items()}
    split = layouts.shard(list(shapes), sizes, 5e9, "model-{:05d}-of-{:05d}.safetensors")
    out = root / name
    out.mkdir(parents=True)
    for file in sorted(set(split.values())):
        write_header_only_safetensors(out / file, {k: (shapes[k], dtype[k]) for k in shapes if split[k] == file})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": sum(sizes.values())},
                                                                  "weight_map": split}))
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4, help="decoder layers kept of the 60 (default 4)")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="output dtypes to run (float32 = the base's)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the sparse inputs go (default a temp dir)")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="adamms-bench34b-"))
    started = time.time()
    try:
        base = sparse_checkpoint("cambrian-34b", work / "in", a.layers)
        other = sparse_checkpoint("yi-vl-34b", work / "in", a.layers)
        apparent = sum(f.stat().st_size for d in (base, other) for f in d.glob("*.safetensors"))
        print(f"sparse inputs: {apparent / GB:.1f} GB apparent ({a.layers} of 60 layers), built in "
              f"{time.time() - started:.0f} s", flush=True)
        script = work / "sink.py"
        script.write_text(SINK)
        rows, own = [], {}
        for dtype in [d.strip() for d in a.dtypes.split(",") if d.strip()]:
            for label, row_bytes in (("block by block (shipped)", ""), ("one block per tensor", str(1 << 40))):
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, str(script), "merge", "--base", str(base), "--other", str(other),
                       "--alpha", "0.4", "--out", str(out), "--quiet", "--max-shard-size", "5GB"]
                cmd += [] if dtype == "float32" else ["--dtype", dtype]
                res = run_measured(cmd, work / f"{dtype}-{bool(row_bytes)}.log",
                                   {"ROW_BYTES": row_bytes, "TQDM_DISABLE": "1"})
                own[(dtype, bool(row_bytes))] = res["peak_anon"] / GB
                rows.append([f"{label}, out {dtype}", res["wall_s"], res["peak_rss"] / GB, res["peak_anon"] / GB,
                             verdict(res["peak_anon"] / GB, TARGET_GB, False)])
                print(f"  {rows[-1][0]:45} {res['wall_s']:7.1f} s, peak RSS {res['peak_rss'] / GB:.2f} GB, "
                      f"own {res['peak_anon'] / GB:.2f} GB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n### Cambrian-34B <- Yi-VL-34B merge, linear alpha 0.4, sparse full-size tensors ({a.layers} layers; "
          f"load average {os.getloadavg()[0]:.1f} at end, 2 = both cores busy)\n")
    print(markdown_table(["run", "wall (s)", "peak RSS (GB)", "own memory RssAnon (GB)", f"< {TARGET_GB} GB"], rows))
    ratios = [[f"own memory, one block per tensor / block by block (out {d})", f"{own[(d, True)] / own[(d, False)]:.1f}x"]
              for d in dict.fromkeys(d for d, _ in own) if (d, True) in own and (d, False) in own]
    print()
    print(markdown_table(["ratio (this run)", "value"], ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
