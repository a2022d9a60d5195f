"""`adamms compare`: bad configs fail before any model loads; an end-to-end run on tiny models writes every output;
a rerun computes nothing and a new row computes only that row."""
import json

import pytest
import yaml

from adamms_eval import compare
from adamms_eval.errors import AdammsError

@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    """The shipped zoo tasks with 12 questions per skill (the repo's own task folder is left alone)."""
    from adamms_eval.task_folders import write_zoo_tasks
    root = tmp_path_factory.mktemp("tasks")
    write_zoo_tasks(root, rows=12)
    return str(root)


def _config(tmp_path, zoo, rows, tasks_root, **over):
    cfg = {"base": str(zoo["qwen2_vl"]), "other": str(zoo["llava_ov_hf"]), "pretrained": str(zoo["qwen2_lm"]),
           "tasks": ["adamms_zoo_colour"], "include_path": [tasks_root], "limit": 4, "output": str(tmp_path / "out"),
           "cache_dir": str(tmp_path / "cache"), "search": {"alphas": "0:0.4:0.2", "search_samples": 4},
           "rows": rows, **over}
    cfg = {k: v for k, v in cfg.items() if v is not None}  # an override of None leaves the key out
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the config was checked")
    monkeypatch.setattr(compare.Runner, "_backend", refuse)


@pytest.mark.parametrize("rows, over, message", [
    ([{"name": "x", "method": "nosuch"}], {}, "nosuch"),
    ([{"name": "x", "method": "ties", "densty": 0.5}], {}, "densty"),
    ([{"name": "x", "method": "linear", "coefficient": "best"}], {}, "must be a number, auto or oracle"),
    ([{"name": "x", "method": "linear", "coefficient": 1.5}], {}, "x"),
    ([{"name": "x", "method": "linear"}], {"tasks": ["adamms_zoo_colur"]}, "adamms_zoo_colour"),
    ([{"name": "x", "method": "linear"}], {"other": "/nonexistent/model"}, "other checkpoint /nonexistent/model"),
    ([{"name": "x", "method": "linear"}], {"serach": {}}, "serach"),
    ([{"name": "x", "method": "linear"}, {"name": "x", "method": "ties"}], {}, "two rows are named"),
])
def test_bad_config_fails_before_loading(tmp_path, zoo, task_data, no_model_loads, rows, over, message):
    with pytest.raises(AdammsError) as e:
        compare.run_compare(_config(tmp_path, zoo, rows, task_data, **over), log=lambda *_: None)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_oracle_needs_labels(tmp_path, zoo, task_data, no_model_loads):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "nolabel.yaml").write_text(
        f"include: {task_data}/adamms_zoo/_default_template.yaml\ntask: zoo_nolabel\ndoc_to_target: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {task_data}/adamms_zoo/data/colour.parquet\n")
    path = _config(tmp_path, zoo, [{"name": "o", "method": "linear", "coefficient": "oracle"}], task_data,
                   tasks=["zoo_nolabel"], include_path=[str(folder)])
    with pytest.raises(AdammsError, match="no labels"):
        compare.run_compare(path, log=lambda *_: None)


def test_end_to_end_resume_and_new_row(tmp_path, zoo, task_data, monkeypatch):
    rows = [{"name": "base", "original": "base"}, {"name": "other", "original": "other"},
            {"name": "linear 0.2", "method": "linear", "coefficient": 0.2},
            {"name": "AdaMMS", "method": "linear", "coefficient": "auto"},
            {"name": "Oracle", "method": "linear", "coefficient": "oracle"}]
    two = ["adamms_zoo_colour", "adamms_zoo_size"]  # the other row's backend serves two evaluate() calls
    data = compare.run_compare(_config(tmp_path, zoo, rows, task_data, tasks=two), log=lambda *_: None)
    out = tmp_path / "out"
    for name in ("comparison.md", "comparison.csv", "comparison.json", "table4.md", "table8.md",
                 "figures/AdaMMS_adamms_zoo_colour.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["table1"]["rows"].keys() == {r["name"] for r in rows}
    sweep = {float(a): s for a, s in saved["sweeps"][next(iter(saved["sweeps"]))]["adamms_zoo_colour"].items()}
    assert sorted(sweep) == [0.0, 0.2, 0.4]
    assert data["scores"]["base"]["adamms_zoo_colour"] == sweep[0.0]  # the base row is linear at α=0
    assert data["scores"]["Oracle"]["adamms_zoo_colour"] == max(sweep.values())
    chosen = data["chosen"]["AdaMMS"]["adamms_zoo_colour"]
    assert data["scores"]["AdaMMS"]["adamms_zoo_colour"] == sweep[chosen]
    _check_evidence(saved, out, tmp_path)

    calls = []
    real = compare.Runner._evaluate
    monkeypatch.setattr(compare.Runner, "_evaluate", lambda self, m, t, o: calls.append(t) or real(self, m, t, o))
    again = compare.run_compare(_config(tmp_path, zoo, rows, task_data, tasks=two), log=lambda *_: None)
    assert calls == [] and again["scores"] == data["scores"]  # everything came from the stored results
    compare.run_compare(_config(tmp_path, zoo, rows + [{"name": "TA", "method": "paper_task_arithmetic"}], task_data,
                                tasks=two), log=lambda *_: None)
    assert calls == two  # only the new row was evaluated


def test_switching_methods_returns_to_the_base_bit_for_bit(tmp_path, zoo, task_data):
    import torch
    rows = [{"name": "TA", "method": "paper_task_arithmetic", "coefficient": 1.0},
            {"name": "TIES", "method": "paper_ties", "coefficient": 1.0},
            {"name": "lin", "method": "linear", "coefficient": 0.3}]
    p = compare.plan(_config(tmp_path, zoo, rows, task_data))
    runner = compare.Runner(p, log=lambda *_: None)
    model = runner._base_model().backend.model
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for row in p.rows:
        runner._session(row).set_for(1.0 if row.method != "linear" else 0.3)
        assert any(not torch.equal(base[k], v) for k, v in model.state_dict().items())  # the weights moved
    runner._session(compare.Row("base", method="linear")).set_for(0.0)
    assert all(torch.equal(base[k], v) for k, v in model.state_dict().items())


def _check_evidence(saved, out, tmp_path):
    """The evidence tables re-derived from the records comparison.json holds; --check against itself and a change."""
    from adamms_eval.compare.runner import check_published
    from adamms_eval.search.signals import choose
    task = "adamms_zoo_colour"
    rec = saved["search_records"]["AdaMMS"][task]
    responses = {float(a): r for a, r in rec["responses"].items()}
    assert len(rec["subset"]) == 4 and all(len(r) == 4 for r in responses.values())
    assert choose("consistency", responses).alpha == rec["alpha"]  # the record's answers give the record's α
    ev = saved["evidence"]
    sig = ev["signals"]["AdaMMS"]
    for name in ("consistency_exact", "base_agreement", "majority", "nll", "entropy"):  # the tiny backend scores
        assert name in sig and task in sig[name]["tasks"], name
    sweep = {float(a): s for a, s in next(iter(saved["sweeps"].values()))[task].items()}
    nll = sig["nll"]["tasks"][task]
    assert nll["alpha"] == 0.2 and nll["lost_all"] == max(sweep.values()) - sweep[0.2]  # one interior candidate
    t3 = ev["table3"]["AdaMMS"][task]
    assert t3["exact_sample"]["alpha"] == rec["alpha"] and t3["exact_full"]["n"] == 4  # limit: 4 inputs
    assert t3["exact_full"]["score"] == sweep[t3["exact_full"]["alpha"]]
    f4 = ev["figure4"]["AdaMMS"][task]
    assert f4["0.2"]["alpha"] == rec["alpha"] and "finer" in f4["0.1"]["unavailable"]
    assert ev["table14"]["AdaMMS"]["chosen"][task] == rec["alpha"]
    assert saved["table8"]["AdaMMS"][task]["supervised_all_score"] == max(sweep.values())
    assert (out / "evidence.md").is_file() and (out / f"figures/figure4_AdaMMS_{task}.png").is_file()
    assert (out / f"figures/signals_AdaMMS_{task}.png").is_file()
    assert (out / "config.yaml").read_text() == (tmp_path / "c.yaml").read_text()  # the exact config that ran
    assert check_published(out / "comparison.json", saved, log=lambda *_: None) == []
    changed = json.loads(json.dumps(saved))
    changed["table1"]["rows"]["AdaMMS"]["sum"] += 1.0
    changed["timings_seconds"]["total"] = -1  # not a result: never compared
    (tmp_path / "published.json").write_text(json.dumps(changed))
    lines = check_published(tmp_path / "published.json", saved, log=lambda *_: None)
    assert len(lines) == 1 and lines[0].startswith("table1.rows.AdaMMS.sum: published")


def test_granularity_grid_and_check(tmp_path, zoo, task_data, capsys):
    """granularity_alphas: a finer grid searched on the same subset (shared answers reused); its 0.2 subsample picks
    what the main 0.2 grid picked; `adamms compare --check` passes on its own output and names a changed number."""
    from adamms_eval.cli import main
    task = "adamms_zoo_colour"
    path = _config(tmp_path, zoo, [{"name": "AdaMMS", "method": "linear", "coefficient": "auto"}], task_data,
                   granularity_alphas="0:0.4:0.1", chance={task: 25})
    assert main(["compare", str(path)]) == 0
    out = tmp_path / "out"
    saved = json.loads((out / "comparison.json").read_text())
    fine = saved["granularity_search"]["AdaMMS"][task]
    assert fine["record"]["candidates"] == [0.0, 0.1, 0.2, 0.3, 0.4] and sorted(fine["sweep"]) == \
        ["0", "0.1", "0.2", "0.3", "0.4"]
    assert fine["record"]["reused_from_cache"] == 3 * 4  # 0, 0.2, 0.4 answered by the main search already
    f4 = saved["evidence"]["figure4"]["AdaMMS"][task]
    assert f4["0.2"]["alpha"] == saved["chosen"]["AdaMMS"][task] and f4["0.1"]["alpha"] == fine["record"]["alpha"]
    assert f4["0.1"]["score"] == fine["sweep"][f"{f4['0.1']['alpha']:g}"] and "finer" in f4["0.05"]["unavailable"]
    assert saved["chance"] == {task: 25.0} and saved["table1"]["chance_sum"] == 25.0
    capsys.readouterr()
    assert main(["compare", str(path), "--check", str(out / "comparison.json")]) == 0
    assert "every published number reproduced exactly" in capsys.readouterr().out
    saved["evidence"]["figure4"]["AdaMMS"][task]["0.1"]["score"] = -1.0
    (tmp_path / "pub.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit) as e:
        main(["compare", str(path), "--check", str(tmp_path / "pub.json")])
    printed = capsys.readouterr().out
    assert e.value.code == 1 and f"differs: evidence.figure4.AdaMMS.{task}.0.1.score: published -1.0" in printed
    assert "1 value(s) differ" in printed
