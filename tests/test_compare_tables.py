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
    # top two per task among non-oracle rows: t1 {AdaMMS 52, A 50}; t2 {A 80, TA 75}; t3 {B 30, TA/AdaMMS 25 tie}
    assert rows["A"]["top2"] == 2 and rows["B"]["top2"] == 1
    assert rows["TA"]["top2"] == 2 and rows["AdaMMS"]["top2"] == 2
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
                       "lost": 15.0}
    assert v["t2"]["lost"] == 0.0 and v["t2"]["distance"] == 0.0
    assert supervised_choice({0.0: 0.5, 0.2: 0.75, 0.4: 0.75}) == 0.2


def test_layouts_mark_best_and_gains():
    t = table1(SCORES, KINDS, TASKS)
    labels = {r: r for r in SCORES}
    md = table1_markdown(t, TASKS, labels, KINDS)
    assert "| AdaMMS | **52.00 (+7.00)** | 70.00 (+0.00) | 25.00 (+5.00) | 147.00 (+12.00) | 2 |" in md
    assert "| A | 50.00 | **80.00** | 10.00 | 140.00 | 2 |" in md
    assert "| *originals' average* | 45.00 | 70.00 | 20.00 | 135.00 | |" in md
    csv_text = table1_csv(t, TASKS, labels).splitlines()
    assert csv_text[0] == "row,t1,t2,t3,SUM,gain_t1,gain_t2,gain_t3,gain_SUM,top2"
    assert csv_text[3] == "TA,48.0,75.0,25.0,148.0,3.0,5.0,5.0,13.0,2"
    md8 = table8_markdown({"AdaMMS": {"t1": {"unlabeled": 0.3, "unlabeled_score": 40.0, "supervised": 0.1,
                                             "supervised_score": 55.0, "n": 100}}})
    assert "| AdaMMS | t1 | 0.3 | 40.00 | 0.1 (n=100) | 55.00 | -15.00 |" in md8


def test_no_originals_no_gain():
    t = table1({"X": {"t1": 1.0}}, {"X": "merge"}, ["t1"])
    assert t["average"] == {} and t["rows"]["X"]["sum_gain"] is None
