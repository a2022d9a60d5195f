"""`adamms eval <lmms-eval arguments>`: lmms-eval's own CLI, with an exit status scripts and CI can trust.

lmms-eval 0.7.3 exits 0 even when a task, the model or an argument failed (it logs the error and goes
on). This launcher runs `python -m lmms_eval` with the same arguments in a subprocess (same Python,
same environment, so `torchrun ... -m adamms_eval.cli eval ...` works too), then exits non-zero unless a
results file newer than the start was written. Before starting it runs our preflight for `--model adamms`
(what lmms-eval itself would misparse in `--model_args`, every setting, the pair's plan from headers), so a
mistake is one line in a second instead of a traceback after lmms-eval's start-up. lmms-eval's output goes to
the console and, whole, to a log file beside the results (`adamms_eval[-rankN].log`); a traceback is kept to
the log and the console gets the one line it ends with and the log's path. Without `--output_path` it adds the
documented default (`$ADAMMS_OUTPUT` or `./adamms_results`), says so, so results and the search record land
together.
"""
from __future__ import annotations

import codecs
import os
import re
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


def _items(model_args: str) -> list[str]:
    """--model_args split as lmms-eval splits it, except that commas inside brackets stay (as they do for us)."""
    depth, item, items = 0, "", []
    for ch in model_args:
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += ch
    items.append(item)
    return [i.strip() for i in items if i.strip()]


def check_model_args(model_args: str) -> dict:
    """Refuse what lmms-eval's comma split would turn into a crash or a silently wrong value; the options."""
    from ...search.rule import ALPHAS_FORMS
    previous, options = None, {}
    for item in _items(model_args):
        if item.startswith("--"):
            name = item[2:].split("=", 1)[0].replace("-", "_")
            raise AdammsError(f"--model_args item {item!r}: inside --model_args write {name}=VALUE, not --{name}")
        if "=" not in item:
            if previous == "alphas":
                raise AdammsError(f"--model_args: lmms-eval splits on commas, so alphas lost {item!r}; write alphas as "
                                  f"{ALPHAS_FORMS}")
            raise AdammsError(f"--model_args item {item!r} has no '=': write name=value items separated by commas "
                              "(a value with commas goes in brackets)")
        previous, value = (x.strip() for x in item.split("=", 1))
        options[previous] = value
    return options


def preflight(model_args: str) -> None:
    """What `--model adamms` checks before loading, done before lmms-eval starts: the settings (every name and
    value), the base's backend and the pair's plan from headers and configs. The backend's own arguments are
    left to the model (naming them needs lmms-eval's model class)."""
    from ...session import parse_settings, preflight_plan
    from .backends import choose_backend
    settings, _ = parse_settings(check_model_args(model_args))
    choose_backend(settings.base, settings.backend)
    preflight_plan(settings)


_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
_LOGURU_ERROR = re.compile(r"\| ERROR +\| .*Error during evaluation: ")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # lmms-eval's loguru colours its lines even into a pipe


class ConsoleFilter:
    """lmms-eval's output for the console: everything but its tracebacks (and its "Error during evaluation"
    line that repeats one), each replaced by nothing; `failure` keeps the last exception line. Segments end at
    a newline or a carriage return, so progress bars pass through as they are drawn."""

    def __init__(self, write):
        self.write, self.pending, self.in_traceback, self.ended, self.failure = write, "", False, False, None

    def feed(self, text: str) -> None:
        self.pending += text
        while True:
            cut = min((i for i in (self.pending.find("\n"), self.pending.find("\r")) if i >= 0), default=-1)
            if cut < 0:
                return
            segment, self.pending = self.pending[:cut + 1], self.pending[cut + 1:]
            self._segment(segment)

    def close(self) -> None:
        if self.pending:
            self._segment(self.pending)
            self.pending = ""

    def _segment(self, segment: str) -> None:
        line = _COLOUR.sub("", segment.rstrip("\r\n")) if self.in_traceback else segment.rstrip("\r\n")
        if self.ended and (not line.strip() or line.startswith(_CHAINED)):
            return  # between a traceback and the one chained to it
        self.ended = False
        if line.startswith(_TRACEBACK):
            self.in_traceback = True
            return
        if self.in_traceback:
            if line and not line[0].isspace():
                self.failure = line  # the exception line ends the traceback (unless another is chained to it)
                self.in_traceback, self.ended = False, True
            return
        if _LOGURU_ERROR.search(_COLOUR.sub("", line)):
            return
        self.write(segment)


def failure_line(line: str) -> tuple[str, bool]:
    """(the message, whether it is one of ours) from a traceback's last line, e.g. `adamms_eval.errors.AdammsError:
    ...`."""
    kind, _, message = line.partition(": ")
    if kind.rsplit(".", 1)[-1] == "AdammsError":
        return message, True
    return line, False


def run_lmms_eval(args: list[str], log_path: Path) -> tuple[int, str | None]:
    """`python -m lmms_eval ARGS` with its whole output in `log_path` and on the console without tracebacks;
    (exit status, the last traceback's exception line or None)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console = ConsoleFilter(lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode  # a chunk may end inside a character
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w", encoding="utf-8") as log, subprocess.Popen(
            [sys.executable, "-m", "lmms_eval", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as proc:
        try:
            while chunk := proc.stdout.read1(65536):  # whatever has arrived: progress bars stay live
                text = decode(chunk)
                log.write(text)
                log.flush()
                console.feed(text)
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise KeyboardInterrupt(f"lmms-eval stopped; its log so far: {log_path}") from None
        code = proc.wait()
    console.close()
    return code, console.failure


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
        preflight(model_args)
    output = _value(args, "--output_path")
    if output is None:
        output = os.environ.get("ADAMMS_OUTPUT") or DEFAULT_OUTPUT
        args += ["--output_path", output]
        print(f"adamms eval: no --output_path; results and the search record go to {Path(output).resolve()}",
              file=sys.stderr)
    folder = Path(output)
    folder = folder if folder.suffix != ".json" else folder.parent
    rank = int(os.environ.get("RANK", "0"))
    log_path = (folder / f"adamms_eval{'' if rank == 0 else f'-rank{rank}'}.log").resolve()
    started = time.time() - 1  # file times may be coarser than time.time()
    code, failure = run_lmms_eval(args, log_path)
    found = results_since(folder, started) if rank == 0 and code == 0 else []
    if failure is not None and not found:
        message, ours = failure_line(failure)
        print(f"adamms eval: error: {message} (lmms-eval's full log: {log_path})", file=sys.stderr)
        return 2 if ours else (code or 1)
    if failure is not None:  # a traceback lmms-eval went on after (results were written)
        print(f"adamms eval: lmms-eval logged an error and went on: {failure} (its full log: {log_path})",
              file=sys.stderr)
    if rank != 0:
        return code  # only rank 0 writes results
    if code != 0:
        print(f"adamms eval: lmms-eval exited with status {code} (its full log: {log_path})", file=sys.stderr)
        return code
    if not found:
        print(f"adamms eval: lmms-eval wrote no results file under {folder}: the evaluation failed "
              f"(its full log: {log_path})", file=sys.stderr)
        return 1
    print(f"adamms eval: results -> {', '.join(str(p) for p in found)}; log -> {log_path}", file=sys.stderr)
    return 0
