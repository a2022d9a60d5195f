"""compare/evidence.py against hand-computed small examples: oracles, the signals table, Table 3, Figure 4's
subsampled grids, Table 14 and --check's differences (no models)."""
import pytest

from adamms_eval.compare.evidence import (against_oracle, differences, granularity, oracles, signals_table, subgrid,
                                          table3, table14)
from adamms_eval.compare.evidence_report import evidence_markdown

SWEEP = {"0": 86.0, "0.1": 85.5, "0.2": 85.2, "0.3": 84.4, "0.4": 80.7}  # the paper's OCRBench column, to 0.4


def test_oracles_all_and_interior():
    o = oracles(SWEEP)
    assert o["all"] == {"alpha": 0.0, "score": 86.0} and o["interior"] == {"alpha": 0.1, "score": 85.5}
    v = against_oracle(0.3, SWEEP)
    assert v["distance_all"] == 0.3 and v["lost_all"] == pytest.approx(1.6)
    assert v["distance_interior"] == 0.2 and v["lost_interior"] == pytest.approx(1.1)


def test_signals_table_sums():
    records = {"ocr": {"signals": {"consistency_exact": {"alpha": 0.1}, "nll": {"alpha": 0.3},
                                   "entropy": {"unavailable": "the harness cannot score answers"}}},
               "mme": {"signals": {"consistency_exact": {"alpha": 0.2}, "nll": {"alpha": 0.2}}}}
    sweeps = {"ocr": SWEEP, "mme": {"0": 81.44, "0.1": 81.46, "0.2": 82.36, "0.3": 83.36, "0.4": 83.03}}
    t = signals_table(records, sweeps)
    # consistency: ocr 0.1 (= interior oracle; 0.5 below α=0), mme 0.2 (oracle 0.3: 1.00 lost)
    assert t["consistency_exact"]["sum"]["distance_interior"] == pytest.approx(0.1)
    assert t["consistency_exact"]["sum"]["lost_interior"] == pytest.approx(1.0)
    assert t["consistency_exact"]["sum"]["lost_all"] == pytest.approx(0.5 + 1.0)
    assert t["nll"]["sum"]["lost_interior"] == pytest.approx(1.1 + 1.0)
    assert t["entropy"]["tasks"] == {} and t["entropy"]["unavailable"] == {"ocr": "the harness cannot score answers"}


def _record(answers_by_alpha, alpha, metric="exact", signals=None):
    return {"alpha": alpha, "metric": metric, "signal": "consistency", "signals": signals or {},
            "responses": {f"{a:g}": r for a, r in answers_by_alpha.items()}}


def test_table3_sample_and_full():
    sweep = {"0": 10.0, "0.1": 20.0, "0.2": 30.0, "0.3": 5.0}
    rec = _record({}, 0.1, signals={"consistency_exact": {"alpha": 0.1},
                                    "consistency_embedding": {"unavailable": "no sentence-transformers"}})
    # every input: D(0.1) = 1 + 0, D(0.2) = 0 + 2 -> 0.1; full answers keyed by doc id (strings, as stored)
    full = {0.0: {"1": "a", "2": "b"}, 0.1: {"1": "a", "2": "c"}, 0.2: {"1": "a", "2": "c"},
            0.3: {"1": "x", "2": "y"}}
    t = table3(rec, sweep, full)
    assert t["exact_sample"] == {"alpha": 0.1, "score": 20.0}
    assert t["exact_full"] == {"alpha": 0.1, "score": 20.0, "n": 2}
    assert "sentence-transformers" in t["embedding_sample"]["unavailable"]
    assert "unavailable" in table3(rec, sweep, {0.0: {"1": "a"}})["exact_full"]  # not every candidate stored


def test_subgrid_and_granularity():
    fine = [round(0.05 * i, 10) for i in range(9)]  # 0 … 0.4 by 0.05
    assert subgrid(fine, 0.1) == [0.0, 0.1, 0.2, 0.3, 0.4] and subgrid(fine, 0.2) == [0.0, 0.2, 0.4]
    # one input; the answer flips between 0.15 and 0.2 and again between 0.3 and 0.35
    answers = {a: ["p" if a < 0.2 else "q" if a < 0.35 else "r"] for a in fine}
    sweep = {f"{a:g}": 100 * a for a in fine}
    g = granularity(_record({a: answers[a] for a in fine}, 0.05), sweep)
    # 0.05: D = 0 at 0.05 and 0.1 (and 0.25): the smaller, 0.05; 0.1: D(0.1)=1, D(0.2)=1, D(0.3)=1 -> 0.1;
    # 0.2: D(0.2) = DiffCnt(q, p) + DiffCnt(q, r) = 2, the only interior candidate
    assert g["0.05"]["alpha"] == 0.05 and g["0.05"]["score"] == pytest.approx(5.0)
    assert g["0.1"]["D"] == {"0.1": 1.0, "0.2": 1.0, "0.3": 1.0} and g["0.1"]["alpha"] == 0.1
    assert g["0.2"]["candidates"] == [0.0, 0.2, 0.4] and g["0.2"]["alpha"] == 0.2 and g["0.2"]["D"] == {"0.2": 2.0}
    coarse = granularity(_record({a: answers[a] for a in (0.0, 0.2, 0.4)}, 0.2), sweep)
    assert "finer than the searched grid" in coarse["0.1"]["unavailable"] and coarse["0.2"]["alpha"] == 0.2
    assert "no answers" in granularity({"alpha": 0.1}, sweep)["0.1"]["unavailable"]


def test_table14():
    sweeps = {"t1": {"0": 50.0, "0.1": 51.0, "0.2": 52.0, "0.3": 40.0}, "t2": {"0": 80.0, "0.1": 79.0, "0.2": 70.0,
                                                                           "0.3": 60.0}}
    originals = {"A": {"t1": 50.0, "t2": 80.0}, "B": {"t1": 40.0, "t2": 60.0}}
    t = table14(sweeps, {"t1": 0.1, "t2": 0.1}, originals)
    assert t["average"] == {"t1": 45.0, "t2": 70.0} and t["candidates"]["0.2"] == {"t1": 52.0, "t2": 70.0}
    assert t["score"] == {"t1": 51.0, "t2": 79.0}
    assert t["distance_all"] == {"t1": 0.1, "t2": 0.1} and t["distance_interior"] == {"t1": 0.1, "t2": 0.0}
    ev = {"signals": {}, "table3": {}, "figure4": {}, "table14": {"AdaMMS": t}}
    md = evidence_markdown(ev, ["t1", "t2"])
    assert "| AVG | 45.00 | 70.00 | 115.00 |" in md and "| selected α | 0.1 | 0.1 | |" in md
    assert "| Oracle (all candidates) | 52.00 (0.2) | 80.00 (0) | |" in md
    assert "| Oracle (interior) | 52.00 (0.2) | 79.00 (0.1) | |" in md


def test_differences_name_every_changed_result_only():
    published = {"table1": {"rows": {"A": {"sum": 10.0, "top2": 3}}}, "chosen": {"A": {"t": 0.1}},
                 "timings_seconds": {"total": 5.0}, "search_records": {"A": {"t": {"search_seconds": 1.0,
                                                                                   "alpha": 0.1}}}}
    same = {"table1": {"rows": {"A": {"sum": 10, "top2": 3}}}, "chosen": {"A": {"t": 0.1}},
            "timings_seconds": {"total": 9.0}, "search_records": {"A": {"t": {"search_seconds": 7.0, "alpha": 0.1}}}}
    assert differences(published, same) == []  # 10 == 10.0; timings are not results
    rerun = {**same, "chosen": {"A": {"t": 0.2}}, "extra": [1]}
    assert differences(published, rerun) == ["chosen.A.t: published 0.1, rerun 0.2", "extra[0]: not published, rerun 1"]
    del rerun["table1"]
    assert "table1.rows.A.sum: published 10.0, missing from the rerun" in differences(published, rerun)
