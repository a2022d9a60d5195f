"""`--model adamms` with the Table 6 bases: a Cambrian base runs through lmms-eval's `cambrian` model when the authors'
`cambrian` package imports, and otherwise stops before anything loads with one line naming what to install; a Yi-VL
base (original layout or the llava-hf style conversion) is refused with the reason (its projector is not one any
lmms-eval backend here builds). The configs are the fixtures' (tests/fixtures/released/)."""
import json
import sys

import pytest
from test_real_layouts import layouts

from adamms_eval.errors import AdammsError
from adamms_eval.harness.lmms_eval import backends


def folder(tmp_path, name, config):
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    return d


@pytest.fixture()
def no_cambrian(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cambrian" else real(name, *a))


@pytest.fixture()
def fake_cambrian(tmp_path, monkeypatch):
    """An importable `cambrian` (empty package): what choose_backend checks for."""
    pkg = tmp_path / "site" / "cambrian"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "cambrian", raising=False)


def test_cambrian_base_without_the_package_stops_naming_what_to_install(tmp_path, no_cambrian):
    base = folder(tmp_path, "cambrian-34b", layouts.load("cambrian-34b")[0])
    with pytest.raises(AdammsError) as e:
        backends.choose_backend(str(base))
    msg = str(e.value)
    assert "\n" not in msg and "pip install git+https://github.com/cambrian-mllm/cambrian" in msg
    assert "not on PyPI" in msg


def test_adamms_model_stops_before_loading_anything(tmp_path, no_cambrian, monkeypatch):
    """The refusal comes from the lmms-eval model's constructor before any backend class is looked up."""
    import adamms_eval.harness.lmms_eval.model as m
    base = folder(tmp_path, "cambrian-34b", layouts.load("cambrian-34b")[0])
    other = folder(tmp_path, "yi-vl-34b", layouts.load("yi-vl-34b")[0])
    monkeypatch.setattr(m, "get_model", lambda *a, **k: pytest.fail("a backend was looked up"))
    with pytest.raises(AdammsError, match="needs the authors' cambrian package"):
        m.Adamms(base=str(base), other=str(other), alpha="0.4")


def test_cambrian_base_with_the_package_runs_through_lmms_evals_cambrian(tmp_path, fake_cambrian):
    base = folder(tmp_path, "cambrian-34b", layouts.load("cambrian-34b")[0])
    assert backends.choose_backend(str(base)) == "cambrian"
    cls = backends.unlisted_backend("cambrian")  # lmms-eval ships models/simple/cambrian.py but does not list it
    assert (cls.__module__, cls.__name__) == ("lmms_eval.models.simple.cambrian", "Cambrian")


def test_cambrian_base_folder_must_carry_the_name_lmms_eval_reads_its_template_from(tmp_path, fake_cambrian):
    base = folder(tmp_path, "merged-base", layouts.load("cambrian-34b")[0])
    with pytest.raises(AdammsError, match="named one of cambrian-8b, cambrian-13b, cambrian-34b"):
        backends.choose_backend(str(base))


@pytest.mark.parametrize("config", [
    layouts.load("yi-vl-34b")[0],  # 01-ai/Yi-VL-34B, the original LLaVA layout
    {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "is_yi_vl_derived_model": True,
     "text_config": {"model_type": "llama", "hidden_size": 7168}},  # the llava-hf style conversion
])
def test_yi_vl_base_is_refused_with_the_reason(tmp_path, config):
    base = folder(tmp_path, "yi-vl", config)
    with pytest.raises(AdammsError) as e:
        backends.choose_backend(str(base))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("no lmms-eval backend runs a yi_vl base here")
    assert "mlp2x_gelu_Norm" in msg and "Cambrian-34B" in msg


def test_a_llava_hf_base_still_runs_through_llava_hf(tmp_path):
    cfg, _ = layouts.load("llava-1.5-7b-hf")
    assert backends.choose_backend(str(folder(tmp_path, "llava", cfg))) == "llava_hf"


def test_the_table6_compare_config_plans_before_anything_loads(tmp_path, fake_cambrian, monkeypatch):
    """configs/paper_cambrian_yivl.yaml pointed at tiny checkpoints of the same layouts and a shipped task: every check
    made before a model loads passes with the cambrian package importable; without it, one line names the package;
    an `original: other` row for Yi-VL is refused with the reason."""
    from pathlib import Path

    import torch
    import yaml
    from test_table6_merge import CAMBRIAN, YI, YI_VL, checkpoint

    from adamms_eval.compare.config import plan
    from adamms_eval.task_folders import write_shapes_tasks
    (tmp_path / "m").mkdir()
    base = checkpoint(tmp_path / "m", "cambrian-34b", CAMBRIAN, torch.float32, 1).rename(tmp_path / "cambrian-34b")
    other = checkpoint(tmp_path / "m", "yi-vl-34b", YI_VL, torch.bfloat16, 2)
    theta0 = checkpoint(tmp_path / "m", "yi-34b", YI, torch.bfloat16, 3)
    tasks = tmp_path / "tasks"
    write_shapes_tasks(tasks, rows=4, seed=0)
    cfg = yaml.safe_load((Path(__file__).parents[1] / "configs" / "paper_cambrian_yivl.yaml").read_text())
    cfg.update(base=str(base), other=str(other), pretrained=str(theta0), tasks=["adamms_shapes_color"],
               include_path=[str(tasks)], output=str(tmp_path / "out"))
    path = tmp_path / "table6.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p = plan(path)
    assert (p.backend, p.other_backend, [r.name for r in p.rows]) == ("cambrian", None, ["Cambrian-34B", "AdaMMS"])
    # the runner loads the base through lmms-eval's own cambrian model (stopped at its constructor: no weights here)
    import lmms_eval.models.simple.cambrian as lmms_cambrian

    from adamms_eval.compare.runner import Runner
    seen = []

    def constructed(self, pretrained, **kwargs):
        seen.append(pretrained)
        raise RuntimeError("stop")
    monkeypatch.setattr(lmms_cambrian.Cambrian, "__init__", constructed)
    with pytest.raises(RuntimeError, match="stop"):
        Runner(p, log=lambda *_: None)._backend(p.backend, cfg["base"], {})
    assert seen == [str(base)]
    path.write_text(yaml.safe_dump({**cfg, "rows": cfg["rows"] + [{"name": "Yi-VL", "original": "other"}]}))
    with pytest.raises(AdammsError, match="no lmms-eval backend runs a yi_vl base here"):
        plan(path)
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cambrian" else real(name, *a))
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(AdammsError, match="pip install git\\+https://github.com/cambrian-mllm/cambrian"):
        plan(path)
