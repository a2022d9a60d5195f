"""`adamms compare` under torchrun / accelerate launch (2 ranks, CPU, gloo): the same scores and chosen α as one
process, every output written by rank 0 alone, and a rerun that computes nothing."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adamms_eval import compare
from helpers import shapes_tasks

pytest.importorskip("lmms_eval")
BIN = Path(sys.executable).parent
TASK = "adamms_shapes_mc"  # multiple choice: the tiny models score above 0 here (loglikelihood path)
ROWS = [{"name": "base", "original": "base"}, {"name": "linear 0.2", "method": "linear", "coefficient": 0.2},
        {"name": "AdaMMS", "method": "linear", "coefficient": "auto"}]
# Every rank appends the paths it writes under $WATCH_DIR to <log dir>/writes.rank<R> (an audit hook: it sees the
# opens, renames, mkdirs and removes of every library, so "rank 1 wrote nothing" is checked, not assumed).
WATCH = '''
import os, sys
_dir, _log = os.environ.get("WATCH_DIR"), os.environ.get("WATCH_LOG")
if _dir and _log and "RANK" in os.environ:
    _out = f"{_log}/writes.rank{os.environ['RANK']}"
    _busy = []
    def _hook(event, args):
        if _busy or event not in ("open", "os.rename", "os.replace", "os.mkdir", "os.remove", "os.rmdir"):
            return
        if event == "open":
            path, mode, flags = args
            if not (isinstance(mode, str) and any(c in mode for c in "wax+")
                    or isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                return
        path = args[0] if event != "os.rename" and event != "os.replace" else args[1]
        if isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith(_dir):
            _busy.append(1)
            try:
                with open(_out, "a") as f:
                    f.write(f"{event} {os.fsdecode(path)}\\n")
            finally:
                _busy.pop()
    sys.addaudithook(_hook)
'''


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    return shapes_tasks(tmp_path_factory.mktemp("tasks"), rows=12)


@pytest.fixture(scope="module")
def llava_b(zoo, tmp_path_factory):
    """A second LLaVA-OneVision (the tiny one, perturbed): an `other` that lmms-eval's llava_hf backend serves,
    which runs data parallel on CPU (see _config)."""
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration
    src, dst = zoo["llava_ov_hf"], tmp_path_factory.mktemp("llava_b")
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(src)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    model.save_pretrained(dst)
    for f in src.iterdir():  # tokenizer, processor, chat template
        if f.is_file() and not (dst / f.name).exists():
            shutil.copy(f, dst / f.name)
    return dst


def _config(folder: Path, zoo, tasks_dir, other=None, task=TASK, rows=ROWS) -> Path:
    # llava_hf as the base backend: lmms-eval's qwen2_vl wrapper puts every rank on cuda:<rank>, so it cannot run
    # data parallel on a CPU; llava_hf on device_map=cpu can
    cfg = {"base": str(zoo["llava_ov_hf"]), "other": str(other or zoo["qwen2_vl"]), "tasks": [task],
           "include_path": [str(tasks_dir)], "limit": 6, "output": str(folder / "out"),
           "cache_dir": str(folder / "cache"),
           "search": {"alphas": "0:0.6:0.2", "search_samples": 4}, "threads": 1, "rows": rows}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "c.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "c.yaml"


@pytest.fixture(scope="module")
def single(tmp_path_factory, zoo, tasks_dir):
    """The same comparison in one process (its own output and cache)."""
    folder = tmp_path_factory.mktemp("single")
    return folder, compare.run_compare(_config(folder, zoo, tasks_dir), log=lambda *_: None)


def _launch(launcher: list[str], folder: Path, config: Path):
    hooks = folder / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(WATCH)
    for old in hooks.glob("writes.rank*"):
        old.unlink()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(hooks)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
           "WATCH_DIR": str(folder / "out"), "WATCH_LOG": str(hooks)}
    r = subprocess.run(launcher + ["-m", "adamms_eval.cli", "compare", str(config)], capture_output=True, text=True,
                       env=env, timeout=600, check=False)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-6000:])
    writes = {rk: (hooks / f"writes.rank{rk}").read_text().split("\n")[:-1] if (hooks / f"writes.rank{rk}").exists()
              else [] for rk in (0, 1)}
    return r, writes


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def _check_against_single(out: Path, cache: Path, single, task=TASK):
    folder, ref = single
    two = json.loads((out / "comparison.json").read_text())
    assert two["scores"] == ref["scores"]
    assert two["chosen"] == ref["chosen"] and two["table4"] == ref["table4"] and two["table8"] == ref["table8"]
    rec, one = two["search_records"]["AdaMMS"][task], ref["search_records"]["AdaMMS"][task]
    for k in ("alpha", "scores", "neighbour_differences", "task_scores", "subset_size", "generations"):
        assert rec[k] == one[k], k
    assert rec["alpha_per_rank"] == [rec["alpha"], rec["alpha"]]  # both ranks took the same α
    # each rank answered its own share of the search subset (the cache is per rank)
    lines = {p.name: len(p.read_text().splitlines()) for p in cache.rglob(f"{task}.rank*.jsonl")}
    assert set(lines) == {f"{task}.rank0.jsonl", f"{task}.rank1.jsonl"} and min(lines.values()) > 0
    # the stored results are the ones the single process stores (same names; scores as above)
    assert {k for k in _files(out / "done")} == {k for k in _files(folder / "out" / "done")}


def test_torchrun_two_ranks_equal_one_process_and_rerun_computes_nothing(tmp_path, zoo, tasks_dir, single):
    torchrun = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29571"]
    config = _config(tmp_path, zoo, tasks_dir)
    r, writes = _launch(torchrun, tmp_path, config)
    out = tmp_path / "out"
    _check_against_single(out, tmp_path / "cache", single)
    assert 0 < single[1]["scores"]["base"][TASK] < 100  # a score that half the documents would change
    assert writes[1] == [] and any("/done/" in w for w in writes[0])  # rank 0 alone writes the outputs
    assert (r.stdout + r.stderr).count("wrote ") == 1  # one summary

    stored = _files(out / "done") | _files(out / "records") | _files(tmp_path / "cache")
    _, writes2 = _launch(torchrun, tmp_path, config)
    assert _files(out / "done") | _files(out / "records") | _files(tmp_path / "cache") == stored  # nothing recomputed
    assert writes2[1] == [] and not any("/done/" in w or "/records/" in w for w in writes2[0])
    assert json.loads((out / "comparison.json").read_text())["scores"] == single[1]["scores"]


def test_accelerate_launch_two_ranks_with_the_other_row(tmp_path, zoo, tasks_dir, llava_b):
    """The other row's own backend under data parallel too (a generating task: the raw backends' loglikelihood
    is lmms-eval's, which the tiny LLaVA processor refuses)."""
    task, rows = "adamms_shapes_color", ROWS[:1] + [{"name": "other", "original": "other"}] + ROWS[1:]
    ref = compare.run_compare(_config(tmp_path / "one", zoo, tasks_dir, llava_b, task, rows), log=lambda *_: None)
    launcher = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29572"]
    _, writes = _launch(launcher, tmp_path, _config(tmp_path, zoo, tasks_dir, llava_b, task, rows))
    _check_against_single(tmp_path / "out", tmp_path / "cache", (tmp_path / "one", ref), task)
    assert (tmp_path / "out" / "done" / "other" / f"{task}.json").is_file()
    assert writes[1] == [] and any("/done/other/" in w for w in writes[0])


def test_device_map_reaches_the_backend(tmp_path, zoo, tasks_dir, monkeypatch):
    """backend_args' device_map (e.g. auto, for a model larger than a card) is passed on as given; without one the
    model goes to the runner's device, except on GPUs under a launcher (the backend places rank r on cuda:r)."""
    import lmms_eval.models
    import torch
    seen = []

    class Backend:
        def __init__(self, **kwargs):
            seen.append(kwargs)
    monkeypatch.setattr(lmms_eval.models, "get_model", lambda name, force_simple=False: Backend)
    runner = compare.Runner(compare.plan(_config(tmp_path, zoo, tasks_dir)), log=lambda *_: None)
    for cuda, world, args, expected in ((True, "1", {"device_map": "auto"}, "auto"), (True, "2", {"device_map": "auto"},
                                        "auto"), (False, "1", {"device_map": "auto"}, "auto"), (False, "1", {}, "cpu"),
                                        (False, "2", {}, "cpu"), (True, "1", {}, "cuda"), (True, "2", {}, None)):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setenv("WORLD_SIZE", world)
        runner._backend("llava_hf", str(zoo["llava_ov_hf"]), args)
        assert seen[-1].get("device_map") == expected and seen[-1]["pretrained"] == str(zoo["llava_ov_hf"])
