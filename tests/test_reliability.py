"""Faults and bad input a user meets (issue 21, items 1-9): every failure one line and a non-zero exit, nothing
half-written, finished work kept for the rerun: damaged kept tensors, a full disk, malformed metadata, an interrupt
while torch imports, paths that lead out of their folder, an unwritable search cache, checks that must come before
loading, and `other` the same model as `base`."""
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from safetensors.torch import load_file, save_file

from adamms_eval.cli import main
from helpers import same_output
from adamms_eval.errors import AdammsError
from adamms_eval.merging import merger as merge_module


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- 1. NaN / Inf in a tensor the merge keeps -------------------------------------------------------------------
def test_nan_in_a_kept_tensor_is_refused_like_a_merged_one(zoo, tmp_path, capsys):
    from adamms_eval.arch.checkpoint import Checkpoint
    from adamms_eval.arch.mapping import build_plan
    base = copy_model(zoo["cogvlm"], tmp_path / "cogvlm_nan")
    plan = build_plan(Checkpoint(base), Checkpoint(zoo["llava15_hf"]))
    key = next(e.key for e in plan.entries if e.group == "vision" and not e.merged and len(e.shape) == 2)
    sd = load_file(base / "model.safetensors")
    sd[key][0, 1] = float("inf")
    save_file(sd, base / "model.safetensors", metadata={"format": "pt"})
    before = {p.name: p.read_bytes() for p in base.iterdir()}
    out = tmp_path / "out"
    code, _, err = run(capsys, "merge", "--base", base, "--other", zoo["llava15_hf"], "--alpha", 0.3, "--out", out,
                       "--quiet")
    line = one_line(err)
    assert code == 2 and key in line and "NaN or Inf" in line, err
    assert not out.exists() and leftovers(out) == []
    assert before == {p.name: p.read_bytes() for p in base.iterdir()}


# A NaN or Inf in a merged tensor of any input is found wherever the check runs (the merged output for the
# elementwise path, the task-vector chunks for task-vector methods, the whole inputs otherwise), at every α.
POISONED = {"base": "language_model.model.layers.1.mlp.up_proj.weight", "other": "model.layers.1.mlp.up_proj.weight",
            "pretrained": "model.layers.1.mlp.up_proj.weight"}
METHOD_ARGS = {"linear0": ["--alpha", "0"], "linear1": ["--alpha", "1"], "linear": ["--alpha", "0.5"],
               "task_arithmetic": ["--method", "task_arithmetic"],
               "ties": ["--method", "ties", "--param", "density=0.5"],
               "dare_ties": ["--method", "dare_ties", "--param", "density=0.5"], "metagpt": ["--method", "metagpt"]}


@pytest.mark.parametrize("method,which,value", [
    ("linear0", "other", "nan"), ("linear1", "base", "inf"), ("linear", "other", "-inf"), ("linear0", "base", "nan"),
    ("task_arithmetic", "pretrained", "inf"), ("task_arithmetic", "other", "nan"),
    ("ties", "base", "nan"), ("ties", "pretrained", "-inf"), ("dare_ties", "other", "inf"),
    ("metagpt", "pretrained", "nan"), ("metagpt", "base", "inf")])
def test_nan_or_inf_in_a_merged_input_is_named(zoo, tmp_path, capsys, method, which, value):
    names = {"base": "llava15_hf", "other": "llama_lm", "pretrained": "llama_lm"}
    paths = {k: zoo[n] for k, n in names.items()}
    paths[which] = bad = copy_model(zoo[names[which]], tmp_path / f"{which}_bad")
    sd = load_file(bad / "model.safetensors")
    sd[POISONED[which]][2, 3] = float(value)
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    args = ["merge", "--base", paths["base"], "--other", paths["other"], "--out", tmp_path / "out", "--quiet",
            *METHOD_ARGS[method]]
    if not method.startswith("linear"):
        args += ["--pretrained", paths["pretrained"]]
    code, _, err = run(capsys, *args)
    line = one_line(err)
    assert code == 2 and POISONED[which] in line and str(bad) in line and "NaN or Inf" in line, err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path / "out") == []


def test_a_merge_that_overflows_the_output_dtype_says_so(zoo, tmp_path, capsys):
    base = copy_model(zoo["llava15_hf"], tmp_path / "big")
    sd = load_file(base / "model.safetensors")
    sd[POISONED["base"]][2, 3] = 1e5  # finite in float32, past float16's 65504
    save_file(sd, base / "model.safetensors", metadata={"format": "pt"})
    code, _, err = run(capsys, "merge", "--base", base, "--other", zoo["llama_lm"], "--alpha", "0.1", "--out",
                       tmp_path / "out", "--quiet", "--dtype", "float16")
    line = one_line(err)
    assert code == 2 and POISONED["base"] in line and "overflows float16" in line, err


# -- 2. disk full while writing -----------------------------------------------------------------------------------


@pytest.fixture
def pair_args(zoo, tmp_path):
    out = tmp_path / "m"
    return out, ["merge", "--base", zoo["qwen2_vl"], "--other", zoo["llava_ov_hf"], "--alpha", 0.3, "--out", out,
                 "--max-shard-size", "100KB", "--quiet"]


def _full_disk_in_shard_writer(monkeypatch, at: int):
    """The shard writer as on a full disk at its `at`-th shard: half the shard reaches the file, then the OSError
    a write raises for ENOSPC."""
    real, calls = merge_module.write_safetensors, [0]

    def write_safetensors(path, tensors, blocks, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            real(path, tensors, blocks, **kwargs)
            Path(path).write_bytes(Path(path).read_bytes()[: Path(path).stat().st_size // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, tensors, blocks, **kwargs)
    monkeypatch.setattr(merge_module, "write_safetensors", write_safetensors)


def _full_disk_in_side_files(monkeypatch, at: int):
    """Every shard written, then ENOSPC copying the base's config and tokenizer files (an OSError)."""
    def copy(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
    monkeypatch.setattr(merge_module, "_copy_side_files", copy)


@pytest.mark.parametrize("inject, at, kept", [(_full_disk_in_shard_writer, 4, 3), (_full_disk_in_side_files, 0, None)])
def test_disk_full_is_one_line_keeps_finished_shards_and_resumes_byte_identically(pair_args, tmp_path, monkeypatch,
                                                                                   capsys, inject, at, kept):
    out, args = pair_args
    ref = tmp_path / "ref"
    assert main([str(a) for a in args[:-5] + ["--out", ref, "--max-shard-size", "100KB", "--quiet"]]) == 0
    shards = len(list(ref.glob("model-*.safetensors")))
    kept = shards if kept is None else kept
    inject(monkeypatch, at)
    code = main([str(a) for a in args])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"adamms: error: disk full writing {out}: the merge needs "), line
    assert "is free there" in line and f"{kept} finished shard(s)" in line and "rerun the same command" in line
    (partial,) = out.parent.glob(".m.partial-*")
    recorded = json.loads((partial / "adamms_partial.json").read_text())["shards"]
    assert len(recorded) == kept and sorted(recorded) == sorted(f.name for f in partial.glob("*.safetensors"))
    assert not out.exists() and not (out.parent / ".m.lock").exists()
    monkeypatch.undo()
    assert main([str(a) for a in args]) == 0
    assert f"{kept} finished shard(s) verified and reused" in capsys.readouterr().err
    same_output(out, ref)
    assert json.loads((out / "adamms_merge.json").read_text())["resumed_shards"] == kept
    assert leftovers(out) == []


# -- 3 and 6. malformed metadata, shard indexes pointing out of the folder, shard sizes ------------------------------
def _config_list(d: Path):
    (d / "config.json").write_text(json.dumps([{"model_type": "llava"}]))


def _index(weight_map):
    def edit(d: Path):
        sd = load_file(d / "model.safetensors")
        (d / "model.safetensors").rename(d / "model-00001-of-00001.safetensors")
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map(sd)}))
    return edit


METADATA = {
    "config.json a list": (_config_list, "holds a JSON list, not an object"),
    "weight_map a list": (_index(lambda sd: ["model-00001-of-00001.safetensors"]), "weight_map must map"),
    "index a list": (lambda d: (d / "model.safetensors.index.json").write_text("[1, 2]"), "unreadable shard index"),
    "index entry ../": (_index(lambda sd: {k: "../outside/model.safetensors" for k in sd}), "outside the model folder"),
    "index entry absolute": (_index(lambda sd: {k: "/etc/model.safetensors" for k in sd}), "outside the model folder"),
}


@pytest.mark.parametrize("case", list(METADATA))
def test_malformed_metadata_is_one_line(zoo, tmp_path, capsys, case):
    edit, needle = METADATA[case]
    bad = copy_model(zoo["llava15_hf"], tmp_path / "bad")
    if case == "index entry ../":  # a real checkpoint beside the model: the merge would read it
        copy_model(zoo["llava15_hf"], tmp_path / "outside")
    edit(bad)
    out = tmp_path / "out"
    code, _, err = run(capsys, "merge", "--base", zoo["cogvlm"], "--other", bad, "--alpha", 0.3, "--out", out,
                       "--quiet")
    assert code == 2 and needle in one_line(err), err
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("size", ["abc", "0", "0GB", "-1GB"])
def test_bad_max_shard_size_is_one_line(zoo, tmp_path, capsys, size):
    out = tmp_path / "out"
    code, _, err = run(capsys, "merge", "--base", zoo["cogvlm"], "--other", zoo["llava15_hf"], "--alpha", 0.3,
                       "--out", out, f"--max-shard-size={size}", "--quiet")
    assert code == 2 and f"--max-shard-size {size}: write a size above zero" in one_line(err), err
    assert not out.exists() and leftovers(out) == []


def test_shard_size_in_bytes_or_with_a_unit():
    assert merge_module.shard_size_bytes("200KB") == 200_000 == merge_module.shard_size_bytes("200000")
    assert merge_module.shard_size_bytes(5_000) == 5_000 and merge_module.shard_size_bytes("1.5GB") == 1_500_000_000


# -- 4. SIGINT / SIGTERM while torch imports ----------------------------------------------------------------------
# The console script as pip writes it, with an import hook that stops the process (SIGSTOP) when torch starts to
# import: the test sends the signal at that exact point, then lets the process go on.
CONSOLE = textwrap.dedent("""
    import importlib, os, signal, sys
    class StopAtTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGSTOP)
            return None
    sys.meta_path.insert(0, StopAtTorch())
    module, _, attr = os.environ["ENTRY"].partition(":")
    sys.exit(getattr(importlib.import_module(module), attr)())
""")


@pytest.mark.parametrize("entry, prog", [("adamms_eval.cli:main", "adamms"),
                                         ("adamms_eval.harness.vlmeval.console:main", "adamms-vlmeval")])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_torch_imports_is_one_line(zoo, tmp_path, entry, prog, sig):
    script = tmp_path / "console.py"
    script.write_text(CONSOLE)
    args = (["plan", "--base", zoo["cogvlm"], "--other", zoo["llava15_hf"]] if prog == "adamms"
            else ["--base", zoo["qwen2_vl"], "--data", "AdammsShapes_YN"])
    p = subprocess.Popen([sys.executable, str(script), *map(str, args)], env={**os.environ, "ENTRY": entry},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _, status = os.waitpid(p.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), p.communicate()
    os.kill(p.pid, sig)
    os.kill(p.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err
    assert err.strip().splitlines() == [f"{prog}: interrupted ({signal.Signals(sig).name}): nothing written"], err


def test_console_modules_import_without_torch():
    code = ("import sys, adamms_eval, adamms_eval.cli, adamms_eval.harness.vlmeval.console\n"
            "assert 'torch' not in sys.modules, 'torch imported before the handlers'\n"
            "from adamms_eval import LazyMerge, METHODS, write_merged\n"  # the public API, on first use
            "assert 'linear' in METHODS and LazyMerge.__name__ == 'LazyMerge' and adamms_eval.merging.merger\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_forked_children_get_the_previous_handlers():
    """VLMEvalKit scores with a fork `mp.Pool`, whose terminate() ends its workers with SIGTERM: a worker with our
    raising handler dies inside a queue lock and leaves the others waiting on it forever."""
    code = textwrap.dedent("""
        import multiprocessing as mp, os, signal
        from adamms_eval.runtime import interrupt_handlers, _raise_interrupted
        def double(x):
            return 2 * x
        with interrupt_handlers():
            assert signal.getsignal(signal.SIGTERM) is _raise_interrupted
            pid = os.fork()
            if pid == 0:
                os._exit(0 if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
                         and signal.getsignal(signal.SIGINT) is signal.default_int_handler else 3)
            assert os.waitpid(pid, 0)[1] == 0, "the child kept our handlers"
            for _ in range(5):
                with mp.get_context("fork").Pool(8) as pool:
                    assert pool.map(double, range(16)) == list(range(0, 32, 2))
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    assert r.returncode == 0 and r.stdout.strip() == "ok" and "Traceback" not in r.stderr, r.stderr


# -- 5, 6 and 8. adamms-vlmeval: VLMEvalKit's flags, folder names, wrapper arguments before loading -------------------
def vlmeval_flags() -> list[str]:
    """Every option of VLMEvalKit's run.py (its own parser, as `vlmeval.run.parse_args` builds it)."""
    import argparse
    import vlmeval.run
    seen = []
    real = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        seen.append(self)
        return real(self, ["--data", "x"], namespace)
    argparse.ArgumentParser.parse_args = capture
    try:
        vlmeval.run.parse_args()
    finally:
        argparse.ArgumentParser.parse_args = real
    return sorted(o for o in seen[0]._option_string_actions if o not in ("-h", "--help"))


def test_every_vlmeval_flag_passes_through():
    from adamms_eval.harness.vlmeval.launcher import parser
    flags = vlmeval_flags()
    assert {"--mode", "--model", "--work-dir", "--judge", "--reuse"} <= set(flags)
    for flag in flags:
        ns, passthrough = parser().parse_known_args([flag, "infer", "--alpha", "0.3"])
        assert passthrough == [flag, "infer"] and ns.model_arg == [] and ns.alpha == "0.3", flag


@pytest.fixture
def vlmeval_env(tmp_path, monkeypatch):
    from adamms_eval.task_folders import write_vlmeval_datasets
    write_vlmeval_datasets(tmp_path / "lmu", rows=4)
    monkeypatch.setenv("LMUData", str(tmp_path / "lmu"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MMEVAL_ROOT", raising=False)


@pytest.fixture
def no_wrapper_loads(monkeypatch):
    from adamms_eval.harness.vlmeval.model import AdammsMixin
    from adamms_eval.harness.vlmeval.ports import _PortMixin

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")
    monkeypatch.setattr(AdammsMixin, "_adamms_init", refuse)
    monkeypatch.setattr(_PortMixin, "_adamms_init", refuse)


def vlmeval(*args) -> int:
    from adamms_eval.harness.vlmeval.launcher import main as launch
    return launch([str(a) for a in args])


def test_mode_infer_reaches_vlmeval(zoo, vlmeval_env, tmp_path, capsys):
    rc = vlmeval("--data", "AdammsShapes_YN", "--work-dir", tmp_path / "w", "--name", "m", "--base", zoo["qwen2_vl"],
                 "--model-arg", "max_new_tokens=2", "--mode", "infer")
    assert rc == 0, capsys.readouterr().err
    assert list((tmp_path / "w" / "m").rglob("m_AdammsShapes_YN.*"))  # predictions written, scoring skipped


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "/tmp/x"])
def test_model_name_cannot_lead_out_of_the_work_dir(zoo, vlmeval_env, tmp_path, capsys, no_wrapper_loads, name):
    work = tmp_path / "a" / "b" / "work"
    rc = vlmeval("--data", "AdammsShapes_YN", "--work-dir", work, "--name", name, "--base", zoo["qwen2_vl"],
                 "--judge", "exact_matching")
    assert rc == 2 and f"--name {name}: VLMEvalKit writes" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lmu"]  # nothing made anywhere


@pytest.mark.parametrize("base", ["qwen2_vl", "llava_ov_hf", "llava15_hf", "cogvlm"])
@pytest.mark.parametrize("merge", [False, True])
def test_wrapper_argument_typo_is_refused_before_loading(zoo, vlmeval_env, tmp_path, capsys, no_wrapper_loads,
                                                         base, merge):
    pair = ["--base", zoo[base]] + (["--other", zoo[base], "--alpha", "0.3"] if merge else [])
    rc = vlmeval("--data", "AdammsShapes_YN", "--work-dir", tmp_path / "w", "--judge", "exact_matching", *pair,
                 "--model-arg", "max_new_tokns=4")
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and "--model-arg max_new_tokns=4" in line and "did you mean max_new_tokens?" in line, line
    assert not (tmp_path / "w").exists()


# -- 7. a search cache that cannot be written ---------------------------------------------------------------------
def test_unwritable_cache_folder_is_refused_before_loading(zoo, vlmeval_env, tmp_path, capsys, no_wrapper_loads):
    (tmp_path / "cache").write_text("a file, not a folder")
    rc = vlmeval("--data", "AdammsShapes_YN", "--work-dir", tmp_path / "w", "--judge", "exact_matching",
                 "--base", zoo["qwen2_vl"], "--other", zoo["llava_ov_hf"], "--alpha", "auto",
                 "--cache-dir", tmp_path / "cache")
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and f"the search answer cache {tmp_path / 'cache'} is not a folder" in line, line
    assert "--cache-dir DIR" in line and not (tmp_path / "w").exists()


def test_task_cache_file_that_cannot_be_appended_costs_only_the_cache(tmp_path, caplog):
    from adamms_eval.fingerprints import digest
    from adamms_eval.search.cache import GenerationCache
    identity = {"run": 1}
    (tmp_path / digest(identity) / "task.rank0.jsonl").mkdir(parents=True)  # a folder where the file goes
    with caplog.at_level(logging.WARNING, logger="adamms_eval"):
        cache = GenerationCache(tmp_path, identity, "task", rank=0)
    assert "cannot be appended to" in cache.note and "without keeping its new answers" in caplog.text
    cache.put(0.3, {"q1": "yes"})  # no error: the answer stays for this run
    assert cache.get(0.3, "q1") == "yes"
    (tmp_path / "ok").mkdir()
    fine = GenerationCache(tmp_path / "ok", identity, "task", rank=0)
    fine.put(0.3, {"q1": "yes"})
    assert not fine.note and GenerationCache(tmp_path / "ok", identity, "task", rank=0).get(0.3, "q1") == "yes"


# -- 8 and 6. adamms compare: limit before loading, figure names --------------------------------------------------
@pytest.mark.parametrize("limit", [-3, 0, 1.5, "abc", True])
def test_compare_limit_is_checked_before_loading(zoo, tmp_path, monkeypatch, limit):
    from adamms_eval import compare

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the config was checked")
    monkeypatch.setattr(compare.Runner, "_backend", refuse)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"base": str(zoo["qwen2_vl"]), "other": str(zoo["llava_ov_hf"]),
                                    "tasks": ["adamms_zoo_colour"], "limit": limit, "output": str(tmp_path / "out"),
                                    "rows": [{"name": "x", "method": "linear", "coefficient": 0.3}]}))
    with pytest.raises(AdammsError) as e:
        compare.run_compare(path, log=lambda *_: None)
    assert f"limit: {limit} must be a whole number" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_compare_figure_names_stay_in_the_figures_folder(tmp_path):
    from adamms_eval.compare.config import Row
    from adamms_eval.compare.outputs import figures
    task = "x/../../../escaped"
    p = SimpleNamespace(rows=[Row("AdaMMS", method="linear", rule="auto")], out=tmp_path / "out",
                        metrics={task: "acc"})
    subset = {"AdaMMS": {task: {"scores": {"0.1": 0.4, "0.2": 0.2, "0.3": 0.5}, "alpha": 0.2}}}
    made = figures(p, subset, {}, {"AdaMMS": "alpha"})
    assert made == {f"AdaMMS/{task}": "figures/AdaMMS_x_.._.._.._escaped.png"}
    assert [f.name for f in tmp_path.rglob("*.png")] == ["AdaMMS_x_.._.._.._escaped.png"]


# -- 9. other the same model as base -----------------------------------------------------------------------------
@pytest.mark.parametrize("how, expect", [("same", "the same folder"), ("symlink", "the same folder"),
                                         ("copy", "a copy of the same files")])
def test_other_same_as_base_warns(zoo, tmp_path, capsys, caplog, how, expect):
    base = zoo["llava15_hf"]
    other = {"same": lambda: base, "symlink": lambda: (tmp_path / "link").symlink_to(base) or tmp_path / "link",
             "copy": lambda: Path(shutil.copytree(base, tmp_path / "copy", copy_function=shutil.copy2))}[how]()
    with caplog.at_level(logging.WARNING, logger="adamms_eval"):
        code, out, _ = run(capsys, "plan", "--base", base, "--other", other)
    assert code == 0 and f"WARNING: other {other} is {expect} as base {base}" in out
    assert "every coefficient gives the base back unchanged" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adamms_eval"):
        run(capsys, "plan", "--base", base, "--other", zoo["cogvlm"])  # another model: no such warning
    assert "gives the base back" not in caplog.text
