"""Our ports as the base inside VLMEvalKit's runner (`adamms-vlmeval`, in process, CPU, offline TSV datasets)."""
import importlib.util
import json
from pathlib import Path

import pytest

if importlib.util.find_spec("vlmeval") is None:  # not importorskip: importing vlmeval turns autograd off
    pytest.skip("VLMEvalKit is not installed (pip install 'adamms-eval[vlmeval]')", allow_module_level=True)
ROWS = 4
GEN = ["--model-arg", "max_new_tokens=4"]
BOTH = ("AdammsShapes_YN", "AdammsShapes_MCQ")


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
    return lmu


def run_ok(work, *args, data=BOTH) -> Path:
    from adamms_eval.harness.vlmeval.launcher import main
    rc = main([str(a) for a in ["--data", *data, "--work-dir", work, "--judge", "exact_matching", "--name", "m",
                                *GEN, *args]])
    assert rc == 0
    return Path(work) / "m"


def predictions(folder: Path, dataset: str) -> dict:
    import pandas as pd
    data = pd.read_excel(folder / f"m_{dataset}.xlsx", dtype=str, na_filter=False)
    assert len(data) == ROWS
    return dict(zip(data["index"], data["prediction"]))


@pytest.mark.parametrize("base,other,wrapper", [("cogvlm", "llava15_hf", "CogVlm"),
                                                ("mplug_owl2", "cogvlm", "mPLUG_Owl2")])
def test_port_base_fixed_alpha_equals_merged_checkpoint(zoo, env, tmp_path, base, other, wrapper):
    from adamms_eval.merging.merger import open_merger, write_merged
    merged = write_merged(open_merger(zoo[base], zoo[other]), 0.5, tmp_path / "merged", progress=False)
    ours = run_ok(tmp_path / "ours", "--base", zoo[base], "--other", zoo[other], "--alpha", "0.5",
                  "--cache-dir", tmp_path / "c")
    ref = run_ok(tmp_path / "ref", "--base", merged)  # the port alone on what `adamms merge` wrote
    plain = run_ok(tmp_path / "plain", "--base", zoo[base], data=BOTH[:1])
    for ds in BOTH:
        assert predictions(ours, ds) == predictions(ref, ds)
    assert predictions(ours, BOTH[0]) != predictions(plain, BOTH[0])  # the merge does change answers here
    assert json.loads((ours / "adamms_search.json").read_text())["run"]["backend"] == wrapper


def test_port_base_auto_search(zoo, env, tmp_path):
    out = run_ok(tmp_path / "auto", "--base", zoo["mplug_owl2"], "--other", zoo["cogvlm"], "--alpha", "auto",
                 "--alphas", "0:0.6:0.2", "--search-samples", "4", "--cache-dir", tmp_path / "c", data=BOTH[:1])
    r = json.loads((out / "adamms_search.json").read_text())["tasks"][BOTH[0]]
    assert r["generations"] == 16 and set(r["scores"]) == {"0.2", "0.4"}
    assert r["alpha"] == min(r["scored"], key=lambda a: (r["scores"][str(a)], a))


def test_cogvlm_folder_without_tokenizer_takes_tokenizer_keyword(zoo, env, tmp_path):
    import shutil
    from adamms_eval.errors import AdammsError
    from adamms_eval.harness.vlmeval.wrappers import AdammsVLM
    bare = tmp_path / "cogvlm"
    shutil.copytree(zoo["cogvlm"], bare, ignore=shutil.ignore_patterns("tokenizer*", "chat_template*"))
    with pytest.raises(AdammsError, match="no tokenizer and none was given.*tokenizer=PATH"):
        AdammsVLM(str(bare))
    model = AdammsVLM(str(bare), tokenizer=str(zoo["llama_lm"]), max_new_tokens=3)
    assert type(model).__name__ == "AdammsCogVlm" and model.tokenizer.bos_token_id == 1
    assert model.kwargs["max_new_tokens"] == 3 and "tokenizer" not in model.kwargs
