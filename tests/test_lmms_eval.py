"""End to end through the real lmms-eval CLI on CPU with the tiny checkpoints and the shipped offline tasks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import shapes_tasks

pytest.importorskip("lmms_eval")
BIN = Path(sys.executable).parent
TASK = "adamms_shapes_color"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    return shapes_tasks(tmp_path_factory.mktemp("tasks"), rows=12)


def run_cli(tasks_dir, model, model_args, tasks=TASK, out=None, limit=6, launcher=None, cwd=None):
    cmd = (launcher or [str(BIN / "lmms-eval")]) + [
        "--model", model, "--model_args", model_args, "--tasks", tasks, "--include_path", str(tasks_dir),
        "--limit", str(limit)] + (["--output_path", str(out), "--log_samples"] if out else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900, cwd=cwd)


def lmms_eval(tasks_dir, out, model, model_args, tasks=TASK, limit=6, launcher=None):
    r = run_cli(tasks_dir, model, model_args, tasks, out, limit, launcher)
    results = list(Path(out).rglob("*_results.json"))
    # lmms-eval exits 0 even when evaluation fails: the results file is the real signal
    assert r.returncode == 0 and results, (r.stdout[-3000:], r.stderr[-6000:])
    return Path(out), r


def answers(out: Path, task=TASK) -> dict:
    (samples,) = out.rglob(f"*_samples_{task}.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return {row["doc_id"]: row["filtered_resps"] for row in rows}


def search_record(out: Path) -> dict:
    (rec,) = out.rglob("adamms_search.json")
    return json.loads(rec.read_text())


def results_of(out: Path) -> tuple[Path, dict]:
    (res,) = out.rglob("*_results.json")
    return res, json.loads(res.read_text())


def test_fixed_alpha_equals_backend_on_merged_checkpoint(zoo, tasks_dir, tmp_path):
    from adamms_eval.merging.merger import open_merger, write_merged
    merged = write_merged(open_merger(zoo["qwen2_vl"], zoo["llava_ov_hf"]), 0.3, tmp_path / "merged", progress=False)
    ours, _ = lmms_eval(tasks_dir, tmp_path / "ours", "adamms",
                        f"base={zoo['qwen2_vl']},other={zoo['llava_ov_hf']},alpha=0.3,cache_dir={tmp_path / 'c'}")
    ref, _ = lmms_eval(tasks_dir, tmp_path / "ref", "qwen2_vl", f"pretrained={merged},device=cpu,device_map=cpu")
    a, b = answers(ours), answers(ref)
    assert len(a) == 6 and a == b
    rec = search_record(ours)
    assert rec["run"]["alpha"] == 0.3 and rec["tasks"]["*"]["searched"] is False
    # issue 10.3: lmms-eval's model name and folder describe the merge; the record sits beside the results
    res, data = results_of(ours)
    assert res.parent.name == data["model_name"] == rec["run"]["run_name"]
    assert data["model_name"].startswith("adamms_qwen2_vl+llava_ov_hf_linear_alpha-0.3_")
    assert (res.parent / "adamms_search.json").is_file()


def test_lambda_is_the_task_vector_coefficient(zoo, tasks_dir, tmp_path):
    """issue 10.1: lambda= moves a task-vector method (not dropped as a parameter); the run is not named after θ0."""
    from adamms_eval.merging.merger import open_merger, write_merged
    params = {"density": 0.5}
    merger = open_merger(zoo["qwen2_vl"], zoo["llava_ov_hf"], "dare_ties", params, zoo["qwen2_lm"])
    merged = write_merged(merger, 0.8, tmp_path / "merged", progress=False)
    args = (f"base={zoo['qwen2_vl']},other={zoo['llava_ov_hf']},method=dare_ties,pretrained={zoo['qwen2_lm']},"
            f"density=0.5,lambda=0.8,cache_dir={tmp_path / 'c'}")
    ours, _ = lmms_eval(tasks_dir, tmp_path / "ours", "adamms", args)
    ref, _ = lmms_eval(tasks_dir, tmp_path / "ref", "qwen2_vl", f"pretrained={merged},device=cpu,device_map=cpu")
    assert answers(ours) == answers(ref)
    rec = search_record(ours)
    assert rec["run"]["alpha"] == 0.8 and rec["run"]["coefficient"] == "lambda"
    assert rec["run"]["coefficient_given_as"] == "lambda" and rec["run"]["method"]["params"]["density"] == 0.5
    res, data = results_of(ours)
    assert "qwen2_lm" not in data["model_name"] and data["model_name"].startswith(
        "adamms_qwen2_vl+llava_ov_hf_dare_ties_lambda-0.8_")


def test_auto_search_records_resumes_and_agrees_over_two_ranks(zoo, tasks_dir, tmp_path):
    # alphas in the bracketed form that survives lmms-eval's comma split (issue 10.5)
    args = (f"base={zoo['llava_ov_hf']},other={zoo['qwen2_vl']},alpha=auto,alphas=[0,0.3,0.6],search_samples=4,"
            f"search_seed=3,search_report=full")
    tasks = "adamms_shapes_color,adamms_shapes_mc,adamms_shapes_mme"
    first, _ = lmms_eval(tasks_dir, tmp_path / "first", "adamms", args + f",cache_dir={tmp_path / 'cache'}", tasks)
    rec = search_record(first)
    (folder,) = {p.parent for p in first.rglob("adamms_search.json")}
    for task in ("adamms_shapes_color", "adamms_shapes_mc", "adamms_shapes_mme"):
        r = rec["tasks"][task]
        assert r["alpha"] == 0.3 and set(r["scores"]) == {"0.3"} and r["neighbours_only"] == [0.0, 0.6]  # Algorithm 1
        assert r["subset_size"] == 4 and r["search_seed"] == 3 and r["generations"] == 12
        assert min(r["scores"].values()) == r["scores"][str(r["alpha"])]
        assert (folder / f"adamms_search_{task}.png").stat().st_size > 1000
    for task, metric in (("adamms_shapes_color", "exact_match"), ("adamms_shapes_mc", "acc")):
        scores = rec["tasks"][task]["task_scores"][metric]  # search_report=full: the task metric per candidate
        assert set(scores) == {"0.0", "0.3", "0.6"} and all(0 <= v <= 1 for v in scores.values())
    # MME's aggregation needs both questions of an image: the subset is drawn in whole pairs (issue 21.17)
    mme = rec["tasks"]["adamms_shapes_mme"]
    assert set(mme["task_scores"]["mme_perception_score"]) == {"0.0", "0.3", "0.6"}

    # issue 10.6: no --output_path -> the record goes to ./adamms_results/<run name>/ and the log says so
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = run_cli(tasks_dir, "adamms", args + f",cache_dir={tmp_path / 'cache'}", tasks, cwd=cwd)
    (again,) = (cwd / "adamms_results").glob("*/adamms_search.json")
    assert again.parent.name == rec["run"]["run_name"] and str(again.parent) in r.stdout + r.stderr
    rec2 = json.loads(again.read_text())
    for task in ("adamms_shapes_color", "adamms_shapes_mc", "adamms_shapes_mme"):
        assert rec2["tasks"][task]["generations"] == 0 and rec2["tasks"][task]["reused_from_cache"] == 12
        assert rec2["tasks"][task]["scores"] == rec["tasks"][task]["scores"]

    torchrun = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29563", "-m", "lmms_eval"]
    two, _ = lmms_eval(tasks_dir, tmp_path / "two", "adamms", args + f",cache_dir={tmp_path / 'cache2'}",
                       "adamms_shapes_color,adamms_shapes_mc", launcher=torchrun)
    rec3 = search_record(two)
    for task in ("adamms_shapes_color", "adamms_shapes_mc"):
        r = rec3["tasks"][task]
        assert r["alpha_per_rank"] == [r["alpha"], r["alpha"]]
        assert r["generations"] == 12  # each rank answered its share of the same subset
        assert r["scores"] == rec["tasks"][task]["scores"]  # same subset and answers as one process
        assert answers(two, task) == answers(first, task)


def test_launcher_full_report_uses_the_tasks_aggregation(zoo, tasks_dir, tmp_path):
    """issue 10.2 + 10.7: `adamms eval` without --output_path writes results and record to the default folder; with
    the whole task as the subset, the MME score recorded for the chosen α is lmms-eval's own result at that α."""
    args = (f"base={zoo['qwen2_vl']},other={zoo['llava_ov_hf']},alpha=auto,alphas=0;0.3;0.6,search_samples=6,"
            f"search_report=full,cache_dir={tmp_path / 'c'}")
    cmd = [str(BIN / "adamms"), "eval", "--model", "adamms", "--model_args", args, "--tasks", "adamms_shapes_mme",
           "--include_path", str(tasks_dir), "--limit", "6", "--log_samples"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "no --output_path" in r.stderr
    res, data = results_of(tmp_path / "adamms_results")
    rec = json.loads((res.parent / "adamms_search.json").read_text())
    mme = rec["tasks"]["adamms_shapes_mme"]
    assert mme["subset_size"] == 6 and set(mme["task_scores"]["mme_perception_score"]) == {"0.0", "0.3", "0.6"}
    ours = mme["task_scores"]["mme_perception_score"][str(mme["alpha"])]
    assert ours == pytest.approx(data["results"]["adamms_shapes_mme"]["mme_perception_score,none"])
    assert (res.parent / "adamms_search_adamms_shapes_mme.png").is_file()


def test_one_search_bar_per_task_and_mme_scored_on_whole_pairs(zoo, tasks_dir, tmp_path):
    """issue 21.14: the search draws one bar (candidates × inputs, the coefficient being generated), not the backend's
    "Model Responding" bar per batch; 21.17: MME's search subset holds whole question pairs, so its aggregation
    scores every candidate (Figure 2's score curve)."""
    import re
    args = (f"base={zoo['qwen2_vl']},other={zoo['llava_ov_hf']},alpha=auto,alphas=[0,0.3,0.6],search_samples=3,"
            f"search_report=full,cache_dir={tmp_path / 'c'}")
    out = tmp_path / "out"
    r = run_cli(tasks_dir, "adamms", args, "adamms_shapes_mme", out, launcher=[str(BIN / "adamms"), "eval"])
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    log = (out / "adamms_eval.log").read_text()
    started = r"{}:\s+0%\|\s*\| 0/\d+ \[00:00<\?, \?it/s\]"  # a bar's first drawing (before any postfix)
    assert len(re.findall(started.format("Model Responding"), log)) == 1, log[-3000:]  # the task's own run only
    assert len(re.findall(started.format("adamms search adamms_shapes_mme"), log)) == 1
    assert re.search(r"adamms search adamms_shapes_mme: 100%\|[^|]*\| 12/12 [^\r\n]*alpha=0\.6", log)
    mme = search_record(out)["tasks"]["adamms_shapes_mme"]
    assert mme["subset_size"] == 4 and mme["generations"] == 12  # two whole pairs (at least 3 questions)
    assert set(mme["task_scores"]["mme_perception_score"]) == {"0.0", "0.3", "0.6"}
    assert "task_scores_unavailable" not in mme and any("whole groups" in n for n in mme["notes"])
    (samples,) = out.rglob("*_samples_adamms_shapes_mme.jsonl")
    assert len(samples.read_text().splitlines()) == 6


def test_failures_exit_non_zero_from_the_launcher(zoo, tasks_dir, tmp_path):
    """issue 10.7 / 10.5: lmms-eval exits 0 on a failed run; `adamms eval` does not, and says why."""
    base = f"base={zoo['qwen2_vl']},other={zoo['llava_ov_hf']}"
    # issue 21.10: a bad setting or an incompatible pair is refused by our preflight, before lmms-eval starts
    for args, needle in ((base + ",metric=cosine", "metric=cosine: choose metric=exact or metric=embedding"),
                         (f"base={zoo['qwen2_vl']},other={zoo['llava15_hf']},alpha=0.3", "language models differ")):
        pre = run_cli(tasks_dir, "adamms", args, out=tmp_path / "pre", launcher=[str(BIN / "adamms"), "eval"])
        assert pre.returncode == 2 and pre.stderr.count("\n") == 1 and needle in pre.stderr, pre.stderr
        assert pre.stdout == "" and not (tmp_path / "pre").exists()  # lmms-eval never ran
    # a backend argument only the model can check: lmms-eval logs a traceback and exits 0; the console gets our one
    # line and the log's path, the log the whole traceback
    launched = run_cli(tasks_dir, "adamms", base + ",alpha=0.3,max_pixls=100", out=tmp_path / "l",
                       launcher=[str(BIN / "adamms"), "eval"])
    console = launched.stdout + launched.stderr
    log = tmp_path / "l" / "adamms_eval.log"
    assert launched.returncode == 2 and "Traceback" not in console and "Error during evaluation" not in console
    (line,) = [x for x in launched.stderr.splitlines() if x.startswith("adamms eval: error:")]
    assert "max_pixls=100" in line and "did you mean max_pixels?" in line and str(log) in line
    assert "Traceback (most recent call last)" in log.read_text() and "max_pixls=100" in log.read_text()
    assert "Selected Tasks" in console  # the rest of lmms-eval's output still reaches the console
    assert not list((tmp_path / "l").rglob("*_results.json"))
    commas = run_cli(tasks_dir, "adamms", base + ",alphas=0,0.3,0.6", out=tmp_path / "l",
                     launcher=[str(BIN / "adamms"), "eval"])
    assert commas.returncode == 2 and "[0,0.3,0.6]" in commas.stderr and "0;0.3;0.6" in commas.stderr


def test_launcher_under_torchrun(zoo, tasks_dir, tmp_path):
    """`torchrun -m adamms_eval.cli eval ...`: every rank runs lmms-eval in its own child process, the two children
    form the process group, rank 0 checks the results; a failed run still exits non-zero on rank 0."""
    base = f"base={zoo['qwen2_vl']},other={zoo['llava_ov_hf']}"

    def torchrun(port):
        return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(port), "-m", "adamms_eval.cli",
                "eval"]
    ok = run_cli(tasks_dir, "adamms", base + ",alpha=0.3", out=tmp_path / "ok", launcher=torchrun(29571))
    assert ok.returncode == 0, (ok.stdout[-3000:], ok.stderr[-3000:])
    one, _ = lmms_eval(tasks_dir, tmp_path / "one", "adamms", base + ",alpha=0.3")
    assert answers(tmp_path / "ok") == answers(one)  # both ranks' shares gathered: the one-process answers
    bad = run_cli(tasks_dir, "adamms", base + ",alpha=0.3,max_pixls=100", out=tmp_path / "bad", launcher=torchrun(29572))
    assert bad.returncode != 0 and "did you mean max_pixels?" in bad.stderr, (bad.stdout[-3000:], bad.stderr[-3000:])
    assert "Traceback" not in bad.stdout  # each rank's traceback stays in its log
    assert {p.name for p in (tmp_path / "bad").glob("adamms_eval*.log")} == {"adamms_eval.log", "adamms_eval-rank1.log"}
