"""The ports' lmms-eval backends, alone and as the generating base of `--model adamms` (real lmms-eval CLI, CPU)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from helpers import shapes_tasks

pytest.importorskip("lmms_eval")
BIN = Path(sys.executable).parent
TASKS = "adamms_shapes_color,adamms_shapes_mc"  # a generation task and a multiple-choice task


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    return shapes_tasks(tmp_path_factory.mktemp("tasks"), rows=8)


def run(tasks_dir, out: Path, model: str, model_args: str) -> Path:
    cmd = [str(BIN / "lmms-eval"), "--model", model, "--model_args", model_args, "--tasks", TASKS,
           "--include_path", str(tasks_dir), "--output_path", str(out), "--log_samples", "--limit", "4"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0 and list(out.rglob("*_results.json")), (r.stdout[-3000:], r.stderr[-6000:])
    return out


def answers(out: Path) -> dict:
    got = {}
    for task in TASKS.split(","):
        (samples,) = out.rglob(f"*_samples_{task}.jsonl")
        got[task] = {r["doc_id"]: r["filtered_resps"] for r in map(json.loads, samples.read_text().splitlines())}
        assert len(got[task]) == 4
    return got


def record(out: Path) -> dict:
    (rec,) = out.rglob("adamms_search.json")
    return json.loads(rec.read_text())


def check_auto(out: Path) -> None:
    tasks = record(out)["tasks"]
    for task in TASKS.split(","):
        r = tasks[task]
        assert r["candidates"] == [0.0, 0.2, 0.4, 0.6] and r["generations"] == 16  # 4 candidates x 4 inputs
        assert set(r["scores"]) == {"0.2", "0.4"}  # Algorithm 1 scores the interior candidates
        assert r["alpha"] == min(r["scored"], key=lambda a: (r["scores"][str(a)], a))


def test_cogvlm_base_merged_with_llava(zoo, tasks_dir, tmp_path):
    base, other = zoo["cogvlm"], zoo["llava15_hf"]
    own = answers(run(tasks_dir, tmp_path / "own", "adamms_cogvlm", f"pretrained={base}"))
    bare = tmp_path / "cogvlm-as-released"  # no tokenizer in the folder: Vicuna's is passed on by adamms
    shutil.copytree(base, bare, ignore=shutil.ignore_patterns("tokenizer*", "chat_template*"))
    zero = answers(run(tasks_dir, tmp_path / "zero", "adamms", f"base={bare},other={other},alpha=0,"
                       f"tokenizer={zoo['llama_lm']},cache_dir={tmp_path / 'c'}"))
    assert zero == own  # α = 0 is the unmerged base, answered by the port itself
    check_auto(run(tasks_dir, tmp_path / "auto", "adamms", f"base={base},other={other},alpha=auto,"
                   f"alphas=0:0.6:0.2,search_samples=4,cache_dir={tmp_path / 'c'}"))


def test_mplug_base_merged_with_cogvlm(zoo, tasks_dir, tmp_path):
    from adamms_eval.merging.merger import open_merger, write_merged
    base, other = zoo["mplug_owl2"], zoo["cogvlm"]
    merged = write_merged(open_merger(base, other), 0.3, tmp_path / "merged", progress=False)
    on_disk = answers(run(tasks_dir, tmp_path / "disk", "adamms_mplug_owl2", f"pretrained={merged}"))
    fixed = run(tasks_dir, tmp_path / "fixed", "adamms", f"base={base},other={other},alpha=0.3,cache_dir={tmp_path / 'c'}")
    assert answers(fixed) == on_disk  # in place (LazyMerge) = the checkpoint adamms merge wrote
    check_auto(run(tasks_dir, tmp_path / "auto", "adamms", f"base={base},other={other},alpha=auto,"
                   f"alphas=0:0.6:0.2,search_samples=4,cache_dir={tmp_path / 'c'}"))


# ---------------------------------------------------------------- the backends in process ----------------------------
@pytest.fixture(scope="module")
def backends(zoo):
    from adamms_eval.harness.lmms_eval.ports import CogVLMBackend, MPLUGOwl2Backend
    return {"cogvlm": CogVLMBackend(pretrained=str(zoo["cogvlm"]), device="cpu"),
            "mplug_owl2": MPLUGOwl2Backend(pretrained=str(zoo["mplug_owl2"]), device="cpu")}


@pytest.mark.parametrize("name", ["cogvlm", "mplug_owl2"])
def test_backend_honours_generation_settings(backends, name):
    be = backends[name]
    img = [Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))]
    ctx = "What colour is the square?"
    long = be.generate_text(ctx, img, {"max_new_tokens": 12})
    short = be.generate_text(ctx, img, {"max_new_tokens": 2})
    assert len(be.tokenizer.encode(short, add_special_tokens=False)) <= 2 and long.startswith(short)
    assert len(long) >= 4
    cut = long[len(long) // 2:][:2]
    assert be.generate_text(ctx, img, {"max_new_tokens": 12, "until": [cut]}) == long.split(cut)[0].strip()
    torch.manual_seed(0)
    a = be.generate_text(ctx, img, {"max_new_tokens": 12, "temperature": 2.0})
    torch.manual_seed(0)
    assert be.generate_text(ctx, img, {"max_new_tokens": 12, "temperature": 2.0}) == a
    nll_img, _ = be.continuation_nll(ctx, " red", img)
    nll_txt, _ = be.continuation_nll(ctx, " red", [])
    assert nll_img > 0 and nll_txt > 0 and nll_img != nll_txt


def test_backend_errors_are_one_line(zoo, tmp_path):
    from adamms_eval.errors import AdammsError
    from adamms_eval.harness.lmms_eval.ports import CogVLMBackend
    bare = tmp_path / "cogvlm"
    shutil.copytree(zoo["cogvlm"], bare, ignore=shutil.ignore_patterns("tokenizer*", "chat_template*"))
    with pytest.raises(AdammsError, match="no tokenizer and none was given.*tokenizer=PATH"):
        CogVLMBackend(pretrained=str(bare), device="cpu")
    assert CogVLMBackend(pretrained=str(bare), tokenizer=str(zoo["llama_lm"]), device="cpu").template == "chat"
    with pytest.raises(AdammsError, match="template=qa: choose one of base, chat, vqa"):
        CogVLMBackend(pretrained=str(zoo["cogvlm"]), template="qa", device="cpu")


def test_search_after_a_run_at_the_base_does_not_generate_alpha_zero_again(zoo, tasks_dir, tmp_path):
    """The base's answers of a plain run (linear α = 0) are its α = 0 candidate in a later search of the same base."""
    base, other, cache = zoo["mplug_owl2"], zoo["cogvlm"], tmp_path / "c"
    run(tasks_dir, tmp_path / "zero", "adamms", f"base={base},other={other},alpha=0,cache_dir={cache}")
    auto = record(run(tasks_dir, tmp_path / "auto", "adamms", f"base={base},other={other},alpha=auto,"
                      f"alphas=0:0.6:0.2,search_samples=4,search_batch_size=4,cache_dir={cache}"))
    for task in TASKS.split(","):
        r = auto["tasks"][task]
        assert r["generations"] == 12 and r["reused_base_answers"] == 4  # 3 merged candidates x 4 inputs
