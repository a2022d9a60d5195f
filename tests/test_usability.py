"""What a newcomer hit (issue 21, items 11-18): did-you-mean on `adamms merge --param`, compare's YAML-spelled errors
and per-row candidates, compare's console, configs that follow $ADAMMS_CACHE, and `make test`'s progress."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adamms_eval import compare
from adamms_eval.cli import main
from adamms_eval.errors import AdammsError
from test_compare import _config, task_data  # noqa: F401  (the fixture is used by name)

REPO = Path(__file__).resolve().parents[1]


# -- 11: adamms merge --param did-you-mean --------------------------------------------------------------------
@pytest.mark.parametrize("method, extra, needle", [
    ("linear", ["--alpha", "0.3"], "did you mean density? (a parameter of ties, dare_linear, dare_ties, not of linear)"),
    ("ties", [], "did you mean density?"),
])
def test_merge_param_typo_did_you_mean(zoo, tmp_path, capsys, method, extra, needle):
    out = tmp_path / "out"
    code = main(["merge", "--base", str(zoo["qwen2_vl"]), "--other", str(zoo["llava_ov_hf"]), "--pretrained",
                 str(zoo["qwen2_lm"]), "--method", method, *extra, "--param", "densty=0.5", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not out.exists()


# -- 12: compare speaks YAML; candidates per row ---------------------------------------------------------------
def test_compare_errors_speak_yaml(tmp_path, zoo, task_data):
    path = _config(tmp_path, zoo, [{"name": "t", "method": "ties", "coefficient": "auto"}], task_data, pretrained=None)
    with pytest.raises(AdammsError) as e:
        compare.plan(path)
    assert "pretrained: DIR" in str(e.value) and "pretrained=DIR" not in str(e.value)
    path = _config(tmp_path, zoo, [{"name": "t", "method": "linear", "coefficient": 0.3, "alphas": "0:1:0.5"}],
                   task_data)
    with pytest.raises(AdammsError, match=r"row 't': alphas: 0:1:0.5 configures a search.*coefficient: auto"):
        compare.plan(path)


def test_compare_misspelt_row_search_key_did_you_mean(tmp_path, zoo, task_data):
    path = _config(tmp_path, zoo, [{"name": "t", "method": "linear", "coefficient": "auto", "alpas": "0:1:0.5"}],
                   task_data)
    with pytest.raises(AdammsError, match=r"row 't': alpas is neither .* did you mean alphas\?"):
        compare.plan(path)


def test_compare_rows_take_their_own_candidates(tmp_path, zoo, task_data):
    rows = [{"name": "AdaMMS", "method": "linear", "coefficient": "auto"},
            {"name": "TIES auto", "method": "paper_ties", "coefficient": "auto", "alphas": "0.2:1.0:0.4"},
            {"name": "TIES oracle", "method": "paper_ties", "coefficient": "oracle", "alphas": "[0.5, 1, 1.5]",
             "search_samples": 3}]
    p = compare.plan(_config(tmp_path, zoo, rows, task_data))
    from adamms_eval.compare.config import _method_key
    by_name = {r.name: p.sessions[_method_key(r)][0] for r in p.rows}
    assert by_name["AdaMMS"].alphas == [0.0, 0.2, 0.4]  # the config's search block
    assert by_name["TIES auto"].alphas == [0.2, 0.6, 1.0] and by_name["TIES auto"].search_samples == 4
    assert by_name["TIES oracle"].alphas == [0.5, 1.0, 1.5] and by_name["TIES oracle"].search_samples == 3


# -- 13: compare's console ---------------------------------------------------------------------------------------
def test_compare_summary_shows_full_task_names():
    from adamms_eval.compare.outputs import summary
    tasks = ["adamms_zoo_colour", "adamms_zoo_position_long_name"]
    data = {"tasks": tasks, "rows": [{"name": "a", "label": "AdaMMS (alpha auto)"}],
            "table1": {"rows": {"a": {"scores": {tasks[0]: 50.0, tasks[1]: 25.0}, "sum": 75.0}}}}
    head, line = summary(data).splitlines()
    assert all(t in head.split() for t in tasks)
    assert line.split()[-3:] == ["50.0", "25.0", "75.0"]
    assert head.index(tasks[1]) + len(tasks[1]) == line.index("25.0") + len("25.0")  # right-aligned under its name


def test_compare_console_has_no_lmms_eval_debug_lines(tmp_path, zoo, task_data):
    """lmms-eval's task index logs a DEBUG line per YAML file that is no task; compare's console shows INFO and up."""
    (Path(task_data) / "notes.yaml").write_text("just: notes\n")  # a YAML that is no task
    path = _config(tmp_path, zoo, [{"name": "x", "method": "linear"}], task_data, tasks=["adamms_zoo_colur"])
    code = ("import sys; from adamms_eval import compare; from adamms_eval.errors import AdammsError\n"
            "try: compare.run_compare(sys.argv[1], log=lambda *_: None)\n"
            "except AdammsError as e: print('refused:', e, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert "refused:" in r.stderr and "adamms_zoo_colour" in r.stderr, r.stderr[-2000:]
    assert "could not be loaded as a task or group" not in r.stderr
    assert "| DEBUG" not in r.stderr


# -- 16: configs follow $ADAMMS_CACHE ---------------------------------------------------------------------------
def test_zoo_config_follows_adamms_cache(tmp_path, monkeypatch):
    from adamms_eval.compare.config import _resolve
    from adamms_eval.zoo.build import default_zoo_dir
    configs = [*(REPO / "configs").glob("*.yaml"), *(REPO / "docs" / "evidence").glob("*/config.yaml")]
    assert configs and not [c for c in configs if "~/.cache" in c.read_text()]  # a built zoo: ${ADAMMS_CACHE}
    built = "${ADAMMS_CACHE}/zoo/" + default_zoo_dir().name + "/model_a"
    monkeypatch.setenv("ADAMMS_CACHE", str(tmp_path / "moved"))
    assert Path(_resolve(built, REPO / "configs")).parent == default_zoo_dir()
    from adamms_eval.task_folders import default_tasks_dir
    assert Path(_resolve("${ADAMMS_CACHE}/tasks", REPO / "configs")) == default_tasks_dir()
    assert _resolve("$ADAMMS_CACHE/zoo", REPO) == str(tmp_path / "moved" / "zoo")
    monkeypatch.delenv("ADAMMS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # unset: the default cache root
    assert Path(_resolve(built, REPO)) == tmp_path / "xdg" / "adamms-eval" / "zoo" / default_zoo_dir().name / \
        "model_a"


def test_missing_zoo_model_says_where_the_build_went(tmp_path, monkeypatch, zoo, task_data):
    from adamms_eval.zoo.build import default_zoo_dir
    monkeypatch.setenv("ADAMMS_CACHE", str(tmp_path / "cache_root"))
    built = default_zoo_dir() / "model_a"
    built.mkdir(parents=True)
    (built / "config.json").write_text("{}")
    path = _config(tmp_path, zoo, [{"name": "x", "method": "linear"}], task_data,
                   base=str(tmp_path / "elsewhere" / "zoo" / default_zoo_dir().name / "model_a"))
    with pytest.raises(AdammsError) as e:
        compare.plan(path)
    msg = str(e.value)
    assert f"`adamms zoo build` wrote {built}" in msg and "${ADAMMS_CACHE}/zoo/" in msg, msg
    (built / "config.json").unlink()
    with pytest.raises(AdammsError, match=re.escape(f"writes the zoo to {default_zoo_dir()}")):
        compare.plan(path)


# -- 18: make test shows progress per file and the slowest tests ------------------------------------------------
def test_make_test_shows_files_and_slowest(tmp_path):
    make = (REPO / "Makefile").read_text()
    assert "make test" in (REPO / ".ci" / "run").read_text()
    recipe = re.search(r"^test:.*\n\t(.+)$", make, re.M).group(1)
    assert "-q" not in recipe.split()
    options = re.search(r"^PYTEST_PROGRESS := (.+)$", make, re.M).group(1).split()
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / name).write_text("import time\n\ndef test_one():\n    time.sleep(1.05)\n\ndef test_two():\n    pass\n")
    r = subprocess.run([sys.executable, "-m", "pytest", *options, "-p", "no:cacheprovider", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout
    lines = r.stdout.splitlines()
    assert any(line.startswith("test_a.py ..") and "[2/4]" in line for line in lines), r.stdout  # file + count
    assert any(line.startswith("test_b.py ..") and "[4/4]" in line for line in lines), r.stdout
    assert "slowest" in r.stdout and "test_a.py::test_one" in r.stdout and "test_a.py::test_two" not in r.stdout


# -- 10: adamms eval keeps lmms-eval's tracebacks to its log --------------------------------------------------------
def test_console_filter_drops_tracebacks_keeps_progress():
    from adamms_eval.harness.lmms_eval.launcher import ConsoleFilter, failure_line
    shown = []
    f = ConsoleFilter(shown.append)
    text = ("loading\n\rbar  10%\rbar 100%\nTraceback (most recent call last):\n  File \"x.py\", line 1\n    raise\n"
            "ValueError: inner\n\nDuring handling of the above exception, another exception occurred:\n\n"
            "Traceback (most recent call last):\n  File \"y.py\", line 2\n"
            "adamms_eval.errors.AdammsError: alpha=2: must be in [0, 1]\n"
            "\x1b[31m2026 | ERROR    | lmms_eval.__main__:cli_evaluate:614 - Error during evaluation: boom\x1b[0m\nafter\n")
    for i in range(0, len(text), 7):  # arrives in pieces
        f.feed(text[i:i + 7])
    f.close()
    assert "".join(shown) == "loading\n\rbar  10%\rbar 100%\nafter\n"
    assert failure_line(f.failure) == ("alpha=2: must be in [0, 1]", True)
    assert failure_line("RuntimeError: CUDA out of memory") == ("RuntimeError: CUDA out of memory", False)


# -- 17: search subsets in whole groups (MME's question pairs) ------------------------------------------------------
def test_subset_in_whole_groups_is_seeded_and_order_free():
    from adamms_eval.search.rule import draw_subset
    ids = list(range(40))
    groups = {i: f"image{i // 2}.png" for i in ids}  # MME: two questions per image
    for seed in range(5):
        sub = draw_subset(ids, 9, seed, groups)
        assert len(sub) == 10 and all(i ^ 1 in sub for i in sub)  # whole pairs, at least 9
        assert sub == draw_subset(ids[::-1], 9, seed, dict(reversed(groups.items())))
    assert draw_subset(ids, 9, 0, groups) != draw_subset(ids, 9, 1, groups)
    singletons = {i: f"q{i}" for i in ids}  # every group one input: the plain draw, as before
    assert draw_subset(ids, 9, 3, singletons) == draw_subset(ids, 9, 3)


def test_pairwise_task_scores_on_a_grouped_subset():
    """A scorer that, like MME's aggregation, refuses an image with one question scores every candidate."""
    from adamms_eval.merging.methods import make_method
    from adamms_eval.search.runner import CoefficientSearch, SearchInput

    class Moving:
        method, value = make_method("linear"), None

        def set(self, alpha):
            self.value = alpha

    model = Moving()
    inputs = [SearchInput(d, f"{d}:p", None, f"img{d // 2}") for d in range(30)]

    def answer(batch):
        return [("yes" if model.value < 0.3 + (i.doc_id % 5) / 10 else "no") for i in batch]

    def pairwise(alpha, answers):
        per_image = {}
        for d, a in answers.items():
            per_image.setdefault(d // 2, []).append(a == "yes")
        assert all(len(v) == 2 for v in per_image.values()), "MME only supports pairwise evaluation"
        return {"acc_plus": sum(all(v) for v in per_image.values()) / len(per_image)}

    rec = CoefficientSearch(model, [0.0, 0.2, 0.4, 0.6], samples=7, seed=2, progress=False).run(
        "mme_like", inputs, answer, pairwise)
    assert rec["subset_size"] == 8 and set(rec["task_scores"]["acc_plus"]) == {"0.0", "0.2", "0.4", "0.6"}
    assert any("whole groups" in n and "4 groups" in n for n in rec["notes"])
