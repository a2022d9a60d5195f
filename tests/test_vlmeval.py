"""AdaMMS inside VLMEvalKit's own runner, on CPU with the tiny checkpoints and the offline TSV datasets.

Runs go through `adamms-vlmeval` in this process (VLMEvalKit's import costs ~7-11 s once); the two-rank
run goes through torchrun.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("vlmeval") is None:  # not importorskip: importing vlmeval turns autograd off
    pytest.skip("VLMEvalKit is not installed (pip install 'adamms-eval[vlmeval]')", allow_module_level=True)
ROWS = 6
GEN = ["--model-arg", "max_new_tokens=4"]


@pytest.fixture(scope="module")
def lmu(tmp_path_factory):
    from adamms_eval.task_folders import write_vlmeval_datasets
    d = tmp_path_factory.mktemp("lmu")
    write_vlmeval_datasets(d, rows=ROWS)
    return d


@pytest.fixture()
def env(lmu, monkeypatch):
    monkeypatch.setenv("LMUData", str(lmu))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MMEVAL_ROOT", raising=False)
    return lmu


def launch(args, capsys=None):
    from adamms_eval.harness.vlmeval.launcher import main
    return main([str(a) for a in args])


def run_ok(work, *args, data=("AdammsShapes_YN", "AdammsShapes_MCQ")):
    rc = launch(["--data", *data, "--work-dir", work, "--judge", "exact_matching", "--name", "m", *GEN, *args])
    assert rc == 0
    return Path(work) / "m"


def predictions(folder: Path, dataset: str) -> dict:
    import pandas as pd
    data = pd.read_excel(folder / f"m_{dataset}.xlsx", dtype=str, na_filter=False)  # an empty answer stays ''
    assert len(data) == ROWS
    return dict(zip(data["index"], data["prediction"]))


def merged_checkpoint(base, other, alpha, out):
    from adamms_eval.merging.merger import open_merger, write_merged
    return write_merged(open_merger(base, other), alpha, out, progress=False)


def config_run(work, cfg_dir, model: dict, datasets):
    """A run from a VLMEvalKit --config file whose model is {"class": "AdammsVLM", ...}."""
    classes = {"AdammsShapes_YN": "ImageYORNDataset", "AdammsShapes_MCQ": "ImageMCQDataset"}
    cfg = {"model": {"m": {"class": "AdammsVLM", "max_new_tokens": 4, **{k: str(v) for k, v in model.items()}}},
           "data": {d: {"class": classes[d], "dataset": d} for d in datasets}}
    (cfg_dir / "cfg.json").write_text(json.dumps(cfg))
    assert launch(["--config", cfg_dir / "cfg.json", "--work-dir", work, "--judge", "exact_matching"]) == 0
    return Path(work) / "m"


def test_fixed_alpha_equals_wrapper_on_merged_checkpoint_and_zero_is_base(zoo, env, tmp_path):
    both = ("AdammsShapes_YN", "AdammsShapes_MCQ")
    merged = merged_checkpoint(zoo["qwen2_vl"], zoo["llava_ov_hf"], 0.3, tmp_path / "merged")
    ours = config_run(tmp_path / "ours", tmp_path, {"base": zoo["qwen2_vl"], "other": zoo["llava_ov_hf"],
                                                    "alpha": 0.3, "cache_dir": tmp_path / "c"}, both)
    ref = run_ok(tmp_path / "ref", "--base", merged, data=both)  # the plain wrapper on what `adamms merge` wrote
    pair = ["--base", zoo["qwen2_vl"], "--other", zoo["llava_ov_hf"], "--cache-dir", tmp_path / "c"]
    zero = run_ok(tmp_path / "zero", *pair, "--alpha", "0", data=both[:1])
    base = run_ok(tmp_path / "base", "--base", zoo["qwen2_vl"], data=both[:1])
    for ds in both:
        assert predictions(ours, ds) == predictions(ref, ds)
    assert predictions(zero, both[0]) == predictions(base, both[0])
    assert predictions(ours, both[0]) != predictions(base, both[0])  # the merge does change answers here
    rec = json.loads((ours / "adamms_search.json").read_text())
    assert rec["run"]["alpha"] == 0.3 and rec["run"]["backend"] == "Qwen2VLChat"
    assert rec["tasks"]["*"]["searched"] is False
    # VLMEvalKit's own scorers ran on our prediction files: score files exist and hold numbers
    status = json.loads((ours / "status.json").read_text())["datasets"]
    for ds, suffix in (("AdammsShapes_YN", "_score.csv"), ("AdammsShapes_MCQ", "_acc.csv")):
        assert (ours / f"m_{ds}{suffix}").stat().st_size > 0
        metrics = status[ds]["metrics"]
        assert any("Overall" in k for k in metrics) and all(0.0 <= float(v) <= 100.0 for v in metrics.values())


@pytest.mark.parametrize("base,other,wrapper,method", [
    ("llava_ov_hf", "qwen2_vl", "LLaVA_OneVision_HF", None),
    ("llava15_hf", "llava15_orig", "LLaVA_Next", None),
    ("qwen2_vl", "llava_ov_hf", "Qwen2VLChat", "paper_ties"),  # a task-vector preset with θ0 and a λ
])
def test_wrappers_and_methods_fixed_coefficient_equal_merged_checkpoint(base, other, wrapper, method, zoo, env,
                                                                         tmp_path):
    from adamms_eval.merging.merger import open_merger, write_merged
    if method is None:
        merger, coef, flags = open_merger(zoo[base], zoo[other]), 0.5, ["--alpha", "0.5"]
    else:
        merger = open_merger(zoo[base], zoo[other], method, {"density": 0.6}, pretrained=zoo["qwen2_lm"])
        coef = 0.8
        flags = ["--method", method, "--param", "density=0.6", "--pretrained", zoo["qwen2_lm"], "--lambda", "0.8"]
    merged = write_merged(merger, coef, tmp_path / "merged", progress=False)
    ours = run_ok(tmp_path / "ours", "--base", zoo[base], "--other", zoo[other], *flags,
                  "--cache-dir", tmp_path / "c", data=("AdammsShapes_MCQ",))
    ref = run_ok(tmp_path / "ref", "--base", merged, data=("AdammsShapes_MCQ",))
    assert predictions(ours, "AdammsShapes_MCQ") == predictions(ref, "AdammsShapes_MCQ")
    run = json.loads((ours / "adamms_search.json").read_text())["run"]
    assert run["backend"] == wrapper and run["alpha"] == coef


def _cached_answers(cache: Path, dataset: str) -> dict[float, dict[str, str]]:
    lines = [line for f in cache.rglob(f"{dataset}*.jsonl") for line in f.read_text().splitlines()]
    out: dict[float, dict[str, str]] = {}
    for line in lines:
        r = json.loads(line)
        out.setdefault(float(r["alpha"]), {})[r["input"].split(":")[0]] = r["response"]
    return out


def test_auto_search_record_matches_select_alpha_and_runs_at_it(zoo, env, tmp_path, capsys):
    from adamms_eval.search.rule import select_alpha
    args = ["--base", zoo["qwen2_vl"], "--other", zoo["llava_ov_hf"], "--alpha", "auto", "--alphas", "0:0.6:0.2",
            "--search-samples", "4", "--search-seed", "3", "--cache-dir", tmp_path / "cache"]
    out = run_ok(tmp_path / "auto", *args, data=("AdammsShapes_YN", "AdammsShapes_GQA"))
    rec = json.loads((out / "adamms_search.json").read_text())
    console = capsys.readouterr().err  # issue 21.15: what was chosen and where the record is, as lmms-eval says it
    assert all(f"adamms: {ds}: chose alpha={rec['tasks'][ds]['alpha']} D=" in console
               for ds in ("AdammsShapes_YN", "AdammsShapes_GQA"))
    assert f"adamms: search record -> {out / 'adamms_search.json'}" in console
    for ds in ("AdammsShapes_YN", "AdammsShapes_GQA"):
        r = rec["tasks"][ds]
        assert r["subset_size"] == 4 and r["task_size"] == ROWS and r["generations"] == 16
        answers = _cached_answers(tmp_path / "cache", ds)
        ids = sorted(answers[0.0])
        assert len(ids) == 4
        expected = select_alpha({a: [answers[a][i] for i in ids] for a in answers})
        assert r["alpha"] == expected.alpha and r["scores"] == expected.to_json()["scores"]
        # the whole dataset then ran at the chosen α: its subset rows answer as they did in the search
        preds = predictions(out, ds)
        assert all(preds[i] == answers[r["alpha"]][i] for i in ids)
        assert (out / f"adamms_search_{ds}.png").stat().st_size > 1000
    status = json.loads((out / "status.json").read_text())["datasets"]
    assert 0 <= float(status["AdammsShapes_GQA"]["metrics"]["Overall"]) <= 100
    # a rerun reuses every cached answer; search_report=full adds VLMEvalKit's score of each candidate's answers
    again = run_ok(tmp_path / "again", *args, "--search-report", "full", data=("AdammsShapes_YN",))
    r2 = json.loads((again / "adamms_search.json").read_text())["tasks"]["AdammsShapes_YN"]
    r1 = rec["tasks"]["AdammsShapes_YN"]
    assert r2["generations"] == 0 and r2["reused_from_cache"] == 16 and r2["alpha"] == r1["alpha"]
    # a resumed run in the same folder takes α from the record instead of searching (nothing asked of the cache)
    for f in out.glob("m_AdammsShapes_YN*"):
        f.unlink()
    capsys.readouterr()
    resumed = run_ok(tmp_path / "auto", *args[:-1], tmp_path / "fresh_cache", data=("AdammsShapes_YN",))
    assert "from the record of the earlier run" in capsys.readouterr().err
    assert not list((tmp_path / "fresh_cache").rglob("AdammsShapes_YN*.jsonl"))
    assert predictions(resumed, "AdammsShapes_YN") == predictions(again, "AdammsShapes_YN")
    from vlmeval.dataset.utils.yorn import YOrN_Extraction
    truth = dict(zip(*(pd_read(env / "AdammsShapes_YN.tsv", c) for c in ("index", "answer"))))
    answers = _cached_answers(tmp_path / "cache", "AdammsShapes_YN")
    for alpha, by_id in answers.items():
        hits = [YOrN_Extraction(a) == truth[i] for i, a in by_id.items()]
        assert r2["task_scores"]["Overall"][str(alpha)] == pytest.approx(100 * sum(hits) / len(hits))


def pd_read(tsv, column):
    import pandas as pd
    return pd.read_csv(tsv, sep="\t", dtype=str)[column].tolist()


def test_two_ranks_agree_on_alpha(zoo, env, tmp_path):
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "adamms_eval.harness.vlmeval.launcher", "--data", "AdammsShapes_YN", "--work-dir", str(tmp_path),
           "--judge", "exact_matching", "--name", "m", *GEN, "--base", str(zoo["qwen2_vl"]),
           "--other", str(zoo["llava_ov_hf"]), "--alphas", "0:0.4:0.2", "--search-samples", "4",
           "--cache-dir", str(tmp_path / "cache")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert r.returncode == 0, r.stderr[-4000:]
    rec = json.loads((tmp_path / "m" / "adamms_search.json").read_text())["tasks"]["AdammsShapes_YN"]
    assert len(rec["alpha_per_rank"]) == 2 and set(rec["alpha_per_rank"]) == {rec["alpha"]}
    assert rec["subset_size"] == 4 and rec["generations"] == 12  # each rank answered its own share once
    assert len(predictions(tmp_path / "m", "AdammsShapes_YN")) == ROWS


# -- bad input: one line, exit code 2, nothing written -----------------------------------------------------
@pytest.mark.parametrize("case", ["unknown", "builtin_offline", "judge", "missing_generated", "bad_setting",
                                  "no_other"])
def test_bad_input_is_one_line_and_writes_nothing(case, zoo, env, tmp_path, capsys, monkeypatch):
    pair = ["--base", zoo["qwen2_vl"], "--other", zoo["llava_ov_hf"], "--alpha", "0.3"]
    data, extra, expect = {
        "unknown": (["AdammsShapes_YNN"], ["--judge", "exact_matching"], "unknown dataset AdammsShapes_YNN"),
        "builtin_offline": (["MME"], ["--judge", "exact_matching"], "$LMUData/MME.tsv (md5 "),
        "judge": (["AdammsShapes_YN"], [], "--judge exact_matching"),
        "missing_generated": (["AdammsShapes_MCQ"], ["--judge", "exact_matching"], "`adamms tasks DIR`"),
        "bad_setting": (["AdammsShapes_YN"], ["--judge", "exact_matching", "--search-samples", "many"],
                        "--search-samples many"),
        "no_other": (["AdammsShapes_YN"], ["--judge", "exact_matching"],
                     "--alpha 0.3 merges into the base: add --other"),
    }[case]
    if case == "no_other":
        pair = pair[:2] + pair[4:]
    if case == "missing_generated":
        monkeypatch.setenv("LMUData", str(tmp_path / "empty"))
        (tmp_path / "empty").mkdir()
    rc = launch(["--data", *data, "--work-dir", tmp_path / "out", *pair, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expect in err[0], err
    assert not (tmp_path / "out").exists()


def test_vlmeval_missing_names_the_extra(monkeypatch):
    from adamms_eval.errors import AdammsError
    from adamms_eval.harness.vlmeval.importing import vlmeval_modules
    monkeypatch.setitem(sys.modules, "vlmeval", None)
    with pytest.raises(AdammsError, match=r"adamms-eval\[vlmeval\]"):
        vlmeval_modules()


def test_dataset_failing_inside_vlmeval_exits_nonzero(zoo, env, tmp_path, capsys, monkeypatch):
    from adamms_eval.harness.vlmeval.model import AdammsQwen2VL

    def broken(self, message, dataset=None):
        raise RuntimeError("generation failed")
    monkeypatch.setattr(AdammsQwen2VL, "generate_inner", broken)
    rc = launch(["--data", "AdammsShapes_YN", "--work-dir", tmp_path, "--judge", "exact_matching", "--name", "m",
                 "--base", zoo["qwen2_vl"]])
    err = capsys.readouterr().err
    assert rc == 1 and "m x AdammsShapes_YN: no prediction file" in err and "generation failed" in err


def test_registration_presets_and_dataset_types():
    import vlmeval.vlm
    from vlmeval.config import supported_VLM
    from vlmeval.dataset import DATASET_TYPE

    from adamms_eval_adapters import vlmeval as registry
    from adamms_eval_tasks.make_vlmeval_datasets import DATASETS as generated
    assert vlmeval.vlm.AdammsVLM is registry.AdammsVLM  # what a --config "class": "AdammsVLM" builds
    preset = supported_VLM["AdaMMS_Qwen2-VL-7B_LLaVA-OV-7B"]
    assert preset.func is registry.AdammsVLM and preset.keywords["base"] == "Qwen/Qwen2-VL-7B-Instruct"
    assert {name: DATASET_TYPE(name) for name in registry.DATASETS} == generated


def test_import_leaves_grad_mode_alone():
    """vlmeval.vlm disables autograd process-wide at import; importing through us must not."""
    import torch
    from adamms_eval.harness.vlmeval.importing import vlmeval_modules
    assert torch.is_grad_enabled()
    vlmeval_modules()
    assert torch.is_grad_enabled()
