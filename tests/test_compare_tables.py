"""adamms compare's table arithmetic against hand-computed values (no models)."""
from adamms_eval.compare.tables import (oracle_point, supervised_choice, table1, table1_csv, table1_markdown, table4,
                                        table8_markdown)

TASKS = ["t1", "t2", "t3"]
SCORES = {"A": {"t1": 50.0, "t2": 80.0, "t3": 10.0},
          "B": {"t1": 40.0, "t2": 60.0, "t3": 30.0},
          "TA": {"t1": 48.0, "t2": 75.0, "t3": 25.0},
          "AdaMMS": {"t1": 52.0, "t2": 70.0, "t3": 25.0},
          "Oracle": {"t1": 60.0, "t2": 81.0, "t3": 31.0}}
KINDS = {"A": "original", "B": "original", "TA": "merge", "AdaMMS": "merge", "Oracle": "oracle"}


def test_sum_gain_top2_best():
    t = table1(SCORES, KINDS, TASKS)
    assert t["average"] == {"t1": 45.0, "t2": 70.0, "t3": 20.0}
    rows = t["rows"]
    assert rows["A"]["sum"] == 140.0 and rows["B"]["sum"] == 130.0
    assert rows["AdaMMS"]["sum"] == 147.0 and rows["AdaMMS"]["sum_gain"] == 147.0 - 135.0
    assert rows["TA"]["gain"] == {"t1": 3.0, "t2": 5.0, "t3": 5.0}
    # paper's rule: a point where fewer than two merging rows (TA, AdaMMS) score strictly higher, over t1-t3 and SUM:
    # A: t1 (only 52 above 50), t2 (none above 80); B: t3 (none above 30); both merges: every column
    assert rows["A"]["top2"] == 2 and rows["B"]["top2"] == 1
    assert rows["TA"]["top2"] == 4 and rows["AdaMMS"]["top2"] == 4
    assert rows["Oracle"]["top2"] is None
    assert rows["TA"]["sum"] == 148.0
    assert t["best"] == {"t1": ["AdaMMS"], "t2": ["A"], "t3": ["B"], "SUM": ["TA"]}


def test_incomplete_row_has_no_sum():
    scores = {**SCORES, "TA": {"t1": 48.0}}
    t = table1(scores, KINDS, TASKS)
    assert t["rows"]["TA"]["sum"] is None and t["rows"]["TA"]["sum_gain"] is None
    assert t["rows"]["TA"]["gain"] == {"t1": 3.0}


def test_oracle_and_table4():
    sweep = {"t1": {0.0: 50.0, 0.1: 55.0, 0.2: 55.0, 0.3: 40.0}, "t2": {0.0: 80.0, 0.1: 70.0}}
    assert oracle_point(sweep["t1"]) == (0.1, 55.0)  # tie between 0.1 and 0.2 -> the smaller α
    v = table4({"t1": 0.3, "t2": 0.0}, sweep)
    assert v["t1"] == {"chosen": 0.3, "oracle": 0.1, "distance": 0.2, "score": 40.0, "oracle_score": 55.0,
                       "lost": 15.0, "oracle_interior": 0.1, "distance_interior": 0.2, "oracle_interior_score": 55.0,
                       "lost_interior": 15.0}
    # the paper's Table 4 OCRBench column: α=0 scores 86.00, the interior oracle is 85.50 at 0.1
    ocr = {"ocr": {0.0: 86.0, 0.1: 85.5, 0.2: 85.2, 0.3: 84.4, 0.4: 80.7, 0.5: 76.4, 0.6: 71.2}}
    o = table4({"ocr": 0.1}, ocr)["ocr"]
    assert (o["oracle"], o["lost"]) == (0.0, 0.5) and (o["oracle_interior"], o["lost_interior"]) == (0.1, 0.0)
    assert v["t2"]["lost"] == 0.0 and v["t2"]["distance"] == 0.0
    assert supervised_choice({0.0: 0.5, 0.2: 0.75, 0.4: 0.75}) == 0.2


def test_layouts_mark_best_and_gains():
    t = table1(SCORES, KINDS, TASKS)
    labels = {r: r for r in SCORES}
    md = table1_markdown(t, TASKS, labels, KINDS)
    assert "| AdaMMS | **52.00 (+7.00)** | 70.00 (+0.00) | 25.00 (+5.00) | 147.00 (+12.00) | 4 |" in md
    assert "| A | 50.00 | **80.00** | 10.00 | 140.00 | 2 |" in md
    assert "| *originals' average* | 45.00 | 70.00 | 20.00 | 135.00 | |" in md
    csv_text = table1_csv(t, TASKS, labels).splitlines()
    assert csv_text[0] == "row,t1,t2,t3,SUM,gain_t1,gain_t2,gain_t3,gain_SUM,top2,top2_above_chance"
    assert csv_text[3] == "TA,48.0,75.0,25.0,148.0,3.0,5.0,5.0,13.0,4,"
    md8 = table8_markdown({"AdaMMS": {"t1": {"unlabeled": 0.3, "unlabeled_score": 40.0, "supervised": 0.1,
                                             "supervised_score": 55.0, "n": 100}}})
    assert "| AdaMMS | t1 | 0.3 | 40.00 | 0.1 (n=100) | 55.00 | -15.00 | – | – |" in md8
    md8 = table8_markdown({"A": {"t1": {"unlabeled": 0.3, "unlabeled_score": 40.0, "supervised": 0.1, "n": 4,
                                        "supervised_score": 55.0, "supervised_all": 0.2, "supervised_all_score": 56.0}}})
    assert "| A | t1 | 0.3 | 40.00 | 0.1 (n=4) | 55.00 | -15.00 | 0.2 | 56.00 |" in md8


def test_no_originals_no_gain():
    t = table1({"X": {"t1": 1.0}}, {"X": "merge"}, ["t1"])
    assert t["average"] == {} and t["rows"]["X"]["sum_gain"] is None


# The paper's Table 1 (LLaVA-OneVision into Qwen2-VL): its Top2 column follows from its scores under TOP2_RULE.
PAPER_TASKS = ["MMMU", "MME", "SeedBench", "OCRBench", "TextVQA", "OKVQA", "GQA", "VizWiz"]
PAPER_TABLE1 = {
    "Qwen2-VL": ("original", [50.11, 81.44, 75.85, 86.00, 84.12, 51.43, 61.80, 68.32], 2),
    "LLaVA-OneVision": ("original", [43.44, 77.04, 75.44, 69.60, 78.47, 49.57, 59.84, 60.97], 0),
    "Task Arithmetic": ("merge", [48.44, 82.33, 75.81, 77.90, 76.22, 50.60, 62.26, 62.76], 1),
    "Ties-Merging": ("merge", [51.11, 82.65, 76.29, 84.40, 79.56, 52.56, 61.84, 66.34], 4),
    "DARE-Linear": ("merge", [43.78, 66.06, 74.32, 72.40, 64.65, 43.41, 55.13, 50.18], 0),
    "DARE-Ties": ("merge", [45.00, 54.43, 74.07, 75.20, 78.54, 49.61, 58.51, 58.05], 0),
    "MetaGPT": ("merge", [50.67, 81.21, 76.35, 85.50, 83.63, 52.24, 61.99, 69.16], 5),
    "AdaMMS": ("merge", [51.11, 83.36, 76.20, 85.50, 83.41, 53.56, 62.02, 68.40], 8),
}


def test_top2_reproduces_the_papers_table1():
    scores = {r: dict(zip(PAPER_TASKS, v)) for r, (_, v, _) in PAPER_TABLE1.items()}
    kinds = {r: k for r, (k, _, _) in PAPER_TABLE1.items()}
    t = table1(scores, kinds, PAPER_TASKS)
    assert {r: t["rows"][r]["top2"] for r in scores} == {r: n for r, (_, _, n) in PAPER_TABLE1.items()}
    assert round(t["rows"]["AdaMMS"]["sum"], 2) == 563.56 and round(t["rows"]["AdaMMS"]["sum_gain"], 2) == 26.84


def test_chance_row_and_ties_at_zero():
    scores = {"A": {"p": 0.0, "q": 60.0}, "B": {"p": 100.0, "q": 40.0},
              "M1": {"p": 0.0, "q": 55.0}, "M2": {"p": 0.0, "q": 45.0}, "M3": {"p": 0.0, "q": 50.0}}
    kinds = {"A": "original", "B": "original", "M1": "merge", "M2": "merge", "M3": "merge"}
    t = table1(scores, kinds, ["p", "q"], chance={"p": 25.0, "q": 50.0})
    rows = t["rows"]
    # p: every merge scores 0, nobody above, so all tie for first and earn a point; none of them above chance 25
    # q: M1 55 (none above), M3 50 (one above), M2 45 (two above: no), A 60 yes, B 40 (three above: no);
    # SUM: M1 55, M3 50, M2 45 likewise, A 60 and B 140 (none above)
    assert {r: rows[r]["top2"] for r in scores} == {"A": 3, "B": 2, "M1": 3, "M2": 1, "M3": 3}
    # above chance: p needs > 25, q > 50, SUM > 75: A only q; B p and SUM; M1 only q
    assert {r: rows[r]["top2_above_chance"] for r in scores} == {"A": 1, "B": 2, "M1": 1, "M2": 0, "M3": 0}
    assert t["chance_sum"] == 75.0
    md = table1_markdown(t, ["p", "q"], {r: r for r in scores}, kinds)
    assert "| *chance* | 25.00 | 50.00 | 75.00 | | |" in md and md.splitlines()[0].endswith("| Top2 | Top2>chance |")
