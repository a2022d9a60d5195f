"""`adamms` command line: plan, merge, architectures. Errors and interrupts are one line on stderr."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import AdammsError
from .runtime import run_console


def _params(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise AdammsError(f"--param {item!r}: write it as name=value, e.g. --param density=0.5")
        out[name.strip()] = value.strip()
    return out


def _add_pair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="base model directory (its architecture is kept)")
    p.add_argument("--other", required=True, help="model directory merged into the base")
    p.add_argument("--pretrained", help="shared pretrained language model θ0 (task-vector methods)")
    p.add_argument("--base-arch", help="force the base adapter (see `adamms architectures`)")
    p.add_argument("--other-arch", help="force the other adapter")
    p.add_argument("--pretrained-arch", help="force the pretrained adapter")


def _print_plan(summary: dict) -> None:
    b, o, p = summary["base"], summary["other"], summary["pretrained"]
    print(f"base       {b['path']}  [{b['architecture']}, {b['family']}]")
    print(f"other      {o['path']}  [{o['architecture']}]")
    print(f"pretrained {p['path']}  [{p['architecture']}]" if p else "pretrained -")
    print(f"vocabulary {summary['vocabulary']}")
    print(f"\n{'group':34} {'tensors':>8} {'merged':>8} {'kept':>6}  why kept")
    for name, g in summary["groups"].items():
        kept = sum(g["kept"].values())
        why = "; ".join(f"{n}× {r}" for r, n in g["kept"].items())
        aligned = f" ({g['vocab_aligned']} vocab-aligned)" if g["vocab_aligned"] else ""
        print(f"{name:34} {g['tensors']:>8} {g['merged']:>8} {kept:>6}  {why}{aligned}")
    print(f"\n{summary['merged']} of {summary['tensors']} tensors merged, "
          f"{summary['merged_parameters']:,} parameters")
    for w in summary.get("warnings", []):
        print(f"WARNING: {w}")


def cmd_plan(a) -> None:
    from .arch.checkpoint import Checkpoint
    from .arch.mapping import build_plan
    plan = build_plan(Checkpoint(a.base), Checkpoint(a.other), Checkpoint(a.pretrained) if a.pretrained else None,
                      a.base_arch, a.other_arch, a.pretrained_arch)
    summary = plan.summary()
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_plan(summary)


def cmd_merge(a) -> None:
    from .merging.merger import open_merger, shard_size_bytes, write_merged
    from .merging.methods import make_method
    params = _params(a.param)
    shard_size_bytes(a.max_shard_size)  # before any file is read
    method = make_method(a.method, params)  # validates parameters before any file is read
    if method.coefficient == "alpha":
        if a.alpha is None:
            raise AdammsError("linear merging needs --alpha (the weight of the other model, in [0, 1])")
        lam = method.check_coefficient(a.alpha)
    else:
        if a.alpha is not None:
            raise AdammsError(f"{a.method} moves along lambda: pass --param lambda=VALUE instead of --alpha")
        lam = method.check_coefficient(method.default_coefficient if method.default_coefficient is not None else 1.0)
    dtype = None
    if a.dtype:
        import torch
        dtype = getattr(torch, a.dtype)
    merger = open_merger(a.base, a.other, a.method, params, a.pretrained, a.base_arch, a.other_arch, a.pretrained_arch,
                         dtype=dtype)
    out = write_merged(merger, lam, a.out, force=a.force, max_shard_size=a.max_shard_size, progress=not a.quiet,
                       notify=lambda message: print(f"adamms: {message}", file=sys.stderr))
    print(f"wrote {out} ({merger.method.name}, {merger.method.coefficient}={lam:g}, "
          f"{len(merger.plan.merged)} of {len(merger.plan.entries)} tensors merged)")


def cmd_architectures(a) -> None:
    from .arch.adapters import adapters
    for name, ad in sorted(adapters().items()):
        print(f"{name:18} {ad.title}")


def cmd_tiny(a) -> None:
    from .testing.tiny import NAMES, build_zoo
    unknown = sorted(set(a.names) - set(NAMES))
    if unknown:
        raise AdammsError(f"unknown tiny checkpoint(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    for name, path in build_zoo(Path(a.out).expanduser(), a.names or None).items():
        print(f"{name:14} {path}")


def cmd_tasks(a) -> None:
    from .task_folders import write_shapes_tasks, write_vlmeval_datasets
    out = Path(a.out).expanduser()
    folder = write_shapes_tasks(out, rows=a.rows, seed=a.seed)
    tsvs = write_vlmeval_datasets(out / "LMUData", rows=a.rows, seed=a.seed)
    print(f"lmms-eval tasks  {folder} ({a.rows} rows): --include_path {out} --tasks adamms_shapes_color,...")
    print(f"VLMEvalKit data  {', '.join(sorted(tsvs))} in {out / 'LMUData'}: LMUData={out / 'LMUData'} --data ...")


def cmd_eval(a) -> None:
    from .harness.lmms_eval.launcher import run
    code = run(a.lmms_args)
    if code:
        raise SystemExit(code)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="adamms", description="Merge heterogeneous multimodal LLMs (AdaMMS).")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="show what a merge would merge and keep (reads headers only)")
    _add_pair_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)
    m = sub.add_parser("merge", help="write a merged checkpoint in the base's format")
    _add_pair_args(m)
    m.add_argument("--method", default="linear",
                   help="linear (AdaMMS), task_arithmetic, ties, dare_linear, dare_ties, metagpt, or a preset of the "
                        "paper's baseline settings: paper_task_arithmetic, paper_ties, paper_dare_linear, "
                        "paper_dare_ties, paper_metagpt")
    m.add_argument("--alpha", type=float, help="linear: weight of the other model, in [0, 1]")
    m.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="method parameter with mergekit's names: weight, density, lambda, normalize, rescale, seed, trim")
    m.add_argument("--out", required=True, help="output directory (appears only when complete)")
    m.add_argument("--force", action="store_true", help="replace an existing output directory")
    m.add_argument("--max-shard-size", default="1GB", help="safetensors shard size (default 1GB)")
    m.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="dtype of the written floating tensors (default: the base's, tensor by tensor; mergekit's "
                        "out_dtype); another dtype merges in float32 and casts once. A float32 34B base is ~139 GB")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_merge)
    r = sub.add_parser("architectures", help="list the supported architectures")
    r.set_defaults(func=cmd_architectures)
    from .testing.tiny import NAMES
    t = sub.add_parser("tiny", help="build tiny random checkpoints in the real layouts, to try merges and harnesses",
                       description="Tiny (~1 MB) random checkpoints of the supported layouts, all grown from one "
                                   "θ0 per family: qwen2_lm / llama_lm are the θ0s. Existing ones are reused.")
    t.add_argument("out", help="folder; each checkpoint goes to OUT/NAME")
    t.add_argument("names", nargs="*", metavar="NAME", help=f"default all: {' '.join(NAMES)}")
    t.set_defaults(func=cmd_tiny)
    k = sub.add_parser("tasks", help="write the offline adamms_shapes tasks (lmms-eval) and datasets (VLMEvalKit)")
    k.add_argument("out", help="folder: OUT/adamms_shapes for --include_path OUT, OUT/LMUData for VLMEvalKit")
    k.add_argument("--rows", type=int, default=40, help="questions (default 40)")
    k.add_argument("--seed", type=int, default=0)
    k.set_defaults(func=cmd_tasks)
    # `adamms eval` takes lmms-eval's own arguments unparsed (prefix_chars: nothing here is an adamms option)
    e = sub.add_parser("eval", prefix_chars="\0", add_help=False,
                       help="run lmms-eval with these arguments; non-zero exit when it fails or writes no results")
    e.add_argument("lmms_args", nargs="*", help="lmms-eval arguments, e.g. --model adamms --model_args ... --tasks ...")
    e.set_defaults(func=cmd_eval)
    from .compare.runner import add_parser as add_compare  # H-zoo: `adamms compare CONFIG.yaml`
    from .zoo.cli import add_parser as add_zoo  # H-zoo: `adamms zoo build|tasks`
    add_compare(sub)
    add_zoo(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    # the handlers come first: an interrupt while torch imports (building the parser, a command's first import) is
    # one line and exit 130 / 143 too
    return run_console("adamms", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AdammsError as e:
        print(f"adamms: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
