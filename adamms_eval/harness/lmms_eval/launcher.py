"""`adamms eval <lmms-eval arguments>`: lmms-eval's own CLI, with an exit status scripts and CI can trust.

lmms-eval 0.7.3 exits 0 even when a task, the model or an argument failed (it logs the error and goes
on). This launcher runs `python -m lmms_eval` with the same arguments in a subprocess (same Python,
same environment, so `torchrun ... -m adamms_eval.cli eval ...` works too), then exits non-zero unless a
results file newer than the start was written. Before starting it checks what lmms-eval itself would
misparse in `--model_args` (a comma inside a value, `--flag` spelling), and without `--output_path` it
adds the documented default (`$ADAMMS_OUTPUT` or `./adamms_results`), says so, so results and the
search record land together.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ...errors import AdammsError
from ...session.records import DEFAULT_OUTPUT


def _value(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def check_model_args(model_args: str) -> None:
    """Refuse what lmms-eval's comma split would turn into a crash or a silently wrong value."""
    from ...search.rule import ALPHAS_FORMS
    depth, item, items = 0, "", []
    for ch in model_args:  # commas inside brackets survive lmms-eval's split, as here
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += ch
    items.append(item)
    previous = None
    for item in (i.strip() for i in items if i.strip()):
        if item.startswith("--"):
            name = item[2:].split("=", 1)[0].replace("-", "_")
            raise AdammsError(f"--model_args item {item!r}: inside --model_args write {name}=VALUE, not --{name}")
        if "=" not in item:
            if previous == "alphas":
                raise AdammsError(f"--model_args: lmms-eval splits on commas, so alphas lost {item!r}; write alphas as "
                                  f"{ALPHAS_FORMS}")
            raise AdammsError(f"--model_args item {item!r} has no '=': write name=value items separated by commas "
                              "(a value with commas goes in brackets)")
        previous = item.split("=", 1)[0].strip()


def results_since(folder: Path, started: float) -> list[Path]:
    return sorted(p for p in folder.rglob("*_results.json") if p.stat().st_mtime >= started)


def run(args: list[str]) -> int:
    args = list(args)
    if args and args[0] == "--":
        args = args[1:]
    if not args or {"-h", "--help"} & set(args):
        return subprocess.call([sys.executable, "-m", "lmms_eval", *(args or ["--help"])])
    model, model_args = _value(args, "--model"), _value(args, "--model_args")
    if model == "adamms" and model_args is not None:
        check_model_args(model_args)
    output = _value(args, "--output_path")
    if output is None:
        output = os.environ.get("ADAMMS_OUTPUT") or DEFAULT_OUTPUT
        args += ["--output_path", output]
        print(f"adamms eval: no --output_path; results and the search record go to {Path(output).resolve()}",
              file=sys.stderr)
    started = time.time() - 1  # file times may be coarser than time.time()
    code = subprocess.call([sys.executable, "-m", "lmms_eval", *args])
    if int(os.environ.get("RANK", "0")) != 0:
        return code  # only rank 0 writes results
    if code != 0:
        print(f"adamms eval: lmms-eval exited with status {code}", file=sys.stderr)
        return code
    folder = Path(output)
    found = results_since(folder if folder.suffix != ".json" else folder.parent, started)
    if not found:
        print(f"adamms eval: lmms-eval wrote no results file under {folder}: the evaluation failed "
              "(see the error above)", file=sys.stderr)
        return 1
    print(f"adamms eval: results -> {', '.join(str(p) for p in found)}", file=sys.stderr)
    return 0
