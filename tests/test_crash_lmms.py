"""SIGKILL an `alpha=auto` lmms-eval run (the real CLI) in the middle of its search, rerun it: only the missing
answers are generated, and the chosen α, the scores and the task's answers equal an uninterrupted run's."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import shapes_tasks

pytest.importorskip("lmms_eval")
BIN = Path(sys.executable).parent
TASK = "adamms_shapes_color"
SAMPLES, CANDIDATES = 10, 4  # 40 search answers, appended per backend batch (lmms-eval batch_size 1)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_tasks(tmp_path_factory.mktemp("tasks"), rows=SAMPLES)


def command(zoo, shapes, out, cache):
    args = (f"base={zoo['llava_ov_hf']},other={zoo['qwen2_vl']},alpha=auto,alphas=0:0.3:0.1,"
            f"search_samples={SAMPLES},search_seed=5,cache_dir={cache}")
    return [str(BIN / "lmms-eval"), "--model", "adamms", "--model_args", args, "--tasks", TASK, "--include_path",
            str(shapes), "--output_path", str(out), "--log_samples", "--limit", str(SAMPLES)]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_to_end(cmd, out):
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    # lmms-eval exits 0 even when evaluation fails: the results file is the real signal
    assert r.returncode == 0 and list(Path(out).rglob("*_results.json")), (r.stdout[-3000:], r.stderr[-6000:])
    (rec,) = Path(out).rglob("adamms_search.json")
    (samples,) = Path(out).rglob(f"*_samples_{TASK}.jsonl")
    answers = {row["doc_id"]: row["filtered_resps"] for row in map(json.loads, samples.read_text().splitlines())}
    return json.loads(rec.read_text())["tasks"][TASK], answers


def valid_lines(cache: Path) -> int:
    n = 0
    for f in cache.rglob("*.jsonl"):
        for line in f.read_bytes().split(b"\n"):
            try:
                json.loads(line)["response"]
                n += 1
            except (ValueError, KeyError, TypeError):
                pass
    return n


def test_killed_search_resumes_with_only_the_missing_answers(zoo, shapes, tmp_path):
    total = SAMPLES * CANDIDATES
    reference, ref_answers = run_to_end(command(zoo, shapes, tmp_path / "ref", tmp_path / "ref_cache"), tmp_path / "ref")
    assert reference["generations"] == total

    cache = tmp_path / "cache"
    p = subprocess.Popen(command(zoo, shapes, tmp_path / "killed", cache), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 600
    while valid_lines(cache) < 12 and p.poll() is None and time.time() < deadline:  # into the second candidate
        time.sleep(0.02)
    # at once: the backend's batch size is 1 here, so each answer is appended as it comes and the tiny model
    # finishes the remaining 28 answers in about a second on an idle machine
    os.kill(p.pid, signal.SIGSTOP)  # freeze, count what is on disk, then kill
    kept = valid_lines(cache)
    # the α = 0 candidate's answers go to the base's own folder (search.identity.base_identity): the last one written
    cache_file = max(cache.rglob("*.jsonl"), key=lambda f: f.stat().st_mtime)
    lost_seconds = time.time() - cache_file.stat().st_mtime  # answers generated since the last append are lost
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert 12 <= kept < total, kept
    print(f"\nkilled after {kept}/{total} search answers were on disk; {lost_seconds:.2f} s of generation lost")

    resumed, answers = run_to_end(command(zoo, shapes, tmp_path / "resumed", cache), tmp_path / "resumed")
    assert resumed["generations"] == total - kept and resumed["reused_from_cache"] == kept
    assert resumed["alpha"] == reference["alpha"] and resumed["scores"] == reference["scores"]
    assert answers == ref_answers
    assert valid_lines(cache) == total
