"""`adamms-vlmeval`: VLMEvalKit's runner with an AdaMMS merge as the model, and checked outputs.

    adamms-vlmeval --data MME OCRBench --base DIR_A --other DIR_B --alpha auto --judge exact_matching [VLMEvalKit flags]
    adamms-vlmeval --config my_config.json          # models of "class": "AdammsVLM" (and any other model)

Our flags name the merge; every other flag goes to VLMEvalKit's `run.py` unchanged. Before anything loads,
the settings, the pair (headers only), the dataset names, the local TSVs (offline) and the judge's API
key are checked; after the run, every model x dataset must have its prediction file and (unless
`--mode infer`) its scores, because VLMEvalKit logs a failed dataset and still exits 0.
Exit codes: 0 done, 1 a dataset produced no predictions or scores, 2 bad input.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from ...errors import AdammsError
from ...runtime import run_console, safe_name
from ...session.settings import BY_NAME, SETTINGS, flag_spell
from . import LOADING

# our flags: every setting but base / other (flags of their own) and backend (the wrapper follows the base's
# model_type), then the loading arguments
OURS = tuple(s.name for s in SETTINGS if s.name not in ("base", "other", "backend")) + tuple(LOADING)


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE")
    k, v = text.split("=", 1)
    return k.strip(), v


def parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a VLMEvalKit flag that is a prefix of ours (--mode, --model: --model-arg) must reach VLMEvalKit
    ap = argparse.ArgumentParser(
        prog="adamms-vlmeval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="Any other flag (--data, --work-dir, --mode, --judge, --limit, --reuse, ...) goes to VLMEvalKit.")
    ap.add_argument("--base", help="base model directory (or hub id in the HF cache): its VLMEvalKit wrapper runs")
    ap.add_argument("--other", help="model merged into the base (omit: the plain base, no merge)")
    ap.add_argument("--name", help="VLMEvalKit model name (output folder); default: a name describing the merge")
    for key in OURS:
        ap.add_argument("--" + key.replace("_", "-"), dest=key, default=None, metavar="V",
                        help=BY_NAME[key].help if key in BY_NAME else LOADING[key])
    ap.add_argument("--param", action="append", type=_key_value, default=[], metavar="K=V",
                    help="a merge-method parameter (density=0.5, weight=..., trim=global)")
    ap.add_argument("--model-arg", action="append", type=_key_value, default=[], metavar="K=V",
                    help="a wrapper argument (max_new_tokens=128, min_pixels=..., system_prompt=...)")
    return ap


def _value(v: str):
    """Model args arrive as text; the wrappers expect numbers and booleans where those are meant."""
    low = v.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


@contextmanager
def _argv(argv):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def _model_options(ns) -> dict:
    options = {k: getattr(ns, k) for k in OURS if getattr(ns, k) is not None}
    options.update({k: v for k, v in ns.param})
    options.update({k: _value(v) for k, v in ns.model_arg})
    return options


def prepare(ns, passthrough: list[str]) -> list[str]:
    """Check and register the merge; the argv VLMEvalKit's runner gets."""
    from ...session import MergeSession, parse_settings

    from . import registry
    from .wrappers import LOAD_KEYS, AdammsVLM, refuse_merge_settings, resolve_model_dir, wrapper_class
    if ns.base is None:
        if ns.other or any(getattr(ns, k) is not None for k in OURS) or ns.param or ns.model_arg:
            raise AdammsError("--other/--alpha/... need --base DIR (the model whose VLMEvalKit wrapper runs)")
        return passthrough
    if "--model" in passthrough or "--config" in passthrough:
        raise AdammsError("--base builds the model; drop --model/--config (or drop --base and use a config whose "
                          'model has "class": "AdammsVLM")')
    base = resolve_model_dir(ns.base)
    cls = wrapper_class(base)
    options = _model_options(ns)
    name = ns.name if ns.name is None else folder_name(ns.name)
    if ns.other is not None:
        other = resolve_model_dir(ns.other)
        merge_options = {k: v for k, v in options.items() if k not in LOAD_KEYS}
        settings, _ = parse_settings({"base": base, "other": other, **merge_options}, backend_params=cls.KWARGS,
                                     spell=_launcher_spell, backend_label=f"VLMEvalKit's {cls.WRAPPER.__name__}")
        name = name or MergeSession(settings, cls.WRAPPER.__name__, harness="vlmeval",
                                    spell=_launcher_spell).run_name  # preflight
        options["other"] = other
    else:
        refuse_merge_settings(base, {k: v for k, v in options.items() if k not in LOAD_KEYS}, _launcher_spell, cls)
    name = name or f"adamms_plain_{Path(base).name}"
    registry.register(name, base=base, spell=_launcher_spell, **options)
    assert registry.supported_VLM[name].func is AdammsVLM
    return ["--model", name] + passthrough


def _launcher_spell(name: str, value) -> str:
    """How the launcher takes an option: our flags, --param (method parameters) or --model-arg (the wrapper's)."""
    from ...merging.methods import REGISTRY
    if name in BY_NAME or name in OURS:
        return flag_spell(name, value)
    if any(name in cls.params for cls in REGISTRY.values()):
        return f"--param {name}={value}"
    return f"--model-arg {name}={value}"


def check_inputs(args) -> None:
    """Dataset names, local TSVs and judge keys, before any model loads."""
    from vlmeval.dataset import DATASET_CLASSES, DATASET_TYPE
    from vlmeval.dataset.video_dataset_config import supported_video_datasets
    from vlmeval.run import get_judge_kwargs
    from vlmeval.smp import LMUDataRoot, md5

    from .registry import DATASETS
    if args.config is not None:
        return  # a config's datasets name their classes; VLMEvalKit's own loader judges them
    root = Path(LMUDataRoot())
    builtin = {n for cls in DATASET_CLASSES for n in cls.supported_datasets()} | set(supported_video_datasets)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("ADAMMS_OFFLINE") == "1"
    for name in args.data:
        tsv = root / f"{name}.tsv"
        if name in DATASETS and not tsv.exists():
            raise AdammsError(f"dataset {name}: {tsv} is missing; generate it with `adamms tasks DIR` and run "
                              f"with LMUData=DIR/LMUData ($LMUData is now {root})")
        if name not in builtin:
            if not tsv.exists():
                close = difflib.get_close_matches(name, sorted(builtin), n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise AdammsError(f"unknown dataset {name}: {hint}not a VLMEvalKit dataset and no custom file {tsv} "
                                  "(custom datasets are $LMUData/<name>.tsv)")
            continue
        want = next((cls.DATASET_MD5.get(name) for cls in DATASET_CLASSES
                     if name in cls.supported_datasets() and hasattr(cls, "DATASET_MD5")), None)
        if offline and want and (not tsv.exists() or md5(str(tsv)) != want):
            raise AdammsError(_download_advice(name, tsv, want))
    if args.mode == "infer":
        return
    keyed = args.judge_key or args.judge_base_url or os.environ.get("OPENAI_API_KEY")
    for name in args.data:
        judge = get_judge_kwargs(name, DATASET_TYPE(name), args).get("model")
        if judge not in (None, "exact_matching") and not keyed:
            raise AdammsError(f"dataset {name} is scored by the judge {judge}, which needs an API key (OPENAI_API_KEY "
                              "or --judge-key) and none is set; add --judge exact_matching to score offline")


def _download_advice(name: str, tsv: Path, want: str) -> str:
    state = "is missing" if not tsv.exists() else "has another md5"
    return (f"dataset {name}: {tsv} {state} and this run is offline, so VLMEvalKit cannot download it (it would "
            f"skip the dataset and still exit 0); place the official TSV at $LMUData/{name}.tsv (md5 {want}: "
            "VLMEvalKit re-downloads any file whose md5 differs), or run once with network access")


def check_outputs(args) -> list[str]:
    """One line per model x dataset that has no prediction file, or no numeric scores (unless --mode infer)."""
    from vlmeval.smp import get_pred_file_path, load
    work_dir = Path(os.environ.get("MMEVAL_ROOT") or args.work_dir)
    problems = []
    for model in args.model:
        root = work_dir / model
        status_file = root / "status.json"
        status = load(str(status_file)).get("datasets", {}) if status_file.exists() else {}
        for name in args.data:
            st = status.get(name, {})
            why = st.get("error_message") or st.get("skip_reason")
            why = f" (VLMEvalKit: {why})" if why else ""
            pred = Path(get_pred_file_path(str(root), model, name))
            if not pred.exists():
                advice = _builtin_tsv_advice(name)
                problems.append(f"{model} x {name}: no prediction file {pred}{why}" + (f"; {advice}" if advice else ""))
            elif args.mode != "infer" and not _has_numbers(st.get("metrics")):
                problems.append(f"{model} x {name}: predictions but no scores in {status_file}{why}")
    return problems


def _builtin_tsv_advice(name: str) -> str:
    """Why a built-in dataset may have been skipped: its TSV is missing or fails the md5 check."""
    from vlmeval.dataset import DATASET_CLASSES
    from vlmeval.smp import LMUDataRoot, md5
    want = next((cls.DATASET_MD5.get(name) for cls in DATASET_CLASSES
                 if name in cls.supported_datasets() and hasattr(cls, "DATASET_MD5")), None)
    tsv = Path(LMUDataRoot()) / f"{name}.tsv"
    if want and (not tsv.exists() or md5(str(tsv)) != want):
        return (f"{tsv} is missing or has another md5, so VLMEvalKit tried to download it: place the official TSV "
                f"at $LMUData/{name}.tsv (md5 {want})")
    return ""


def _has_numbers(metrics) -> bool:
    def numeric(v):
        try:
            return float(v) == float(v)
        except (TypeError, ValueError):
            return False
    return bool(metrics) and any(numeric(v) for v in dict(metrics).values())


def _gloo_if_cpu():
    """torchrun without CUDA: VLMEvalKit asks for NCCL; give it a gloo group instead (already initialised)."""
    import torch
    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.cuda.is_available():
        return None
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    real = dist.init_process_group
    dist.init_process_group = lambda *a, **k: None
    return lambda: setattr(dist, "init_process_group", real)


def folder_name(name: str, flag: str = "--name") -> str:
    """A model name VLMEvalKit makes a folder of under --work-dir: a plain name, never a path out of it."""
    if "/" in name or "\\" in name or not name.strip(".") or "\0" in name:
        fix = safe_name(name, keep="_.-+", collapse=True).strip("._") or "my_merge"
        raise AdammsError(f"{flag} {name}: VLMEvalKit writes this model's files in the folder --work-dir/NAME, so "
                          f"NAME must be a folder name, not a path; e.g. {flag} {fix}")
    return name


def main(argv: list[str] | None = None) -> int:
    return run_console("adamms-vlmeval", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ns, passthrough = parser().parse_known_args(argv)
    try:
        runner_argv = prepare(ns, passthrough)
        import vlmeval.run as run
        with _argv(["adamms-vlmeval"] + runner_argv):
            args = run.parse_args()
        if args.config is not None:
            cfg = run.load(args.config)
            args.model, args.data = list(cfg["model"]), list(cfg["data"])
        elif not args.data or not args.model:
            raise AdammsError("give --data NAME [NAME ...] and --base DIR (or a --config file)")
        for model in args.model:
            folder_name(model, "--name" if model == ns.name else "model name")
        check_inputs(args)
    except AdammsError as e:
        print(f"adamms-vlmeval: error: {e}", file=sys.stderr)
        return 2
    restore = _gloo_if_cpu()
    try:
        run.load_env()
        with _argv(["adamms-vlmeval"] + runner_argv):
            run.main()
    finally:
        if restore:
            restore()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    problems = check_outputs(args)
    for line in problems:
        print(f"adamms-vlmeval: error: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
