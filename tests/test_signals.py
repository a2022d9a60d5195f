"""Label-free selection signals (search/signals.py) against values computed by hand on a fixed answer set, the
Algorithm-1 eligibility and ties, token statistics against their formulas, and the search runner's scoring."""
import math

import pytest
import torch

from adamms_eval.errors import AdammsError
from adamms_eval.merging.methods import make_method
from adamms_eval.search.runner import CoefficientSearch, SearchInput
from adamms_eval.search.signals import SIGNALS, choose, majority_answers, mean_per_token, parse_signals

# five candidates, four inputs; answers normalised before comparing ("Red " == "red")
ANSWERS = {0.0: ["red", "two", "yes", "cat"],
           0.1: ["Red ", "two", "no", "cat"],
           0.2: ["red", "three", "no", "cat"],
           0.3: ["blue", "three", "no", "dog"],
           0.4: ["blue", "four", "no", "dog"]}
# token statistics per answer: (Σ nll, Σ entropy, tokens)
STATS = {0.0: [(1.0, 2.0, 1), (2.0, 2.0, 2), (0.5, 1.0, 1), (3.0, 3.0, 3)],
         0.1: [(0.4, 0.8, 1), (1.0, 3.0, 2), (0.2, 0.5, 1), (0.0, 0.0, 0)],
         0.2: [(0.6, 0.9, 1), (0.8, 1.0, 2), (0.3, 0.3, 1), (1.2, 0.6, 3)],
         0.3: [(0.1, 0.1, 1), (0.2, 0.2, 2), (0.1, 0.1, 1), (0.3, 0.3, 3)],
         0.4: [(0.0, 0.0, 1), (0.0, 0.0, 2), (0.0, 0.0, 1), (0.0, 0.0, 3)]}
CONF = {a: [{"nll": n, "entropy": h, "tokens": t} for n, h, t in v] for a, v in STATS.items()}


def test_consistency_by_hand():
    # DiffCnt(0,.1)=1 (yes/no), (.1,.2)=1 (two/three), (.2,.3)=2 (red/blue, cat/dog), (.3,.4)=1 (three/four)
    res = choose("consistency", ANSWERS)
    assert res.scores == {0.1: 2.0, 0.2: 3.0, 0.3: 3.0} and res.alpha == 0.1 and res.signal == "consistency"


def test_nll_and_entropy_by_hand():
    nll = choose("nll", ANSWERS, CONF)
    # 0.1: (0.4/1 + 1.0/2 + 0.2/1) / 3 (the zero-token answer left out) = 1.1 / 3
    # 0.2: (0.6 + 0.4 + 0.3 + 0.4) / 4 = 0.425; 0.3: (0.1 + 0.1 + 0.1 + 0.1) / 4 = 0.1
    assert nll.scores == pytest.approx({0.1: 1.1 / 3, 0.2: 0.425, 0.3: 0.1})
    assert nll.alpha == 0.3  # 0.4 is more confident still, but an end is never eligible (Algorithm 1)
    ent = choose("entropy", ANSWERS, CONF)
    # 0.1: (0.8 + 1.5 + 0.5) / 3; 0.2: (0.9 + 0.5 + 0.3 + 0.2) / 4; 0.3: 0.1
    assert ent.scores == pytest.approx({0.1: 2.8 / 3, 0.2: 1.9 / 4, 0.3: 0.1}) and ent.alpha == 0.3
    assert mean_per_token([{"nll": 1.0, "tokens": 0}], "nll") == math.inf


def test_base_agreement_and_majority_by_hand():
    base = choose("base_agreement", ANSWERS)  # differences from α=0's answers
    assert base.scores == {0.1: 1.0, 0.2: 2.0, 0.3: 4.0} and base.alpha == 0.1
    # per input the majority over the five: red (3 of 5), a tie two/three (2 each: two comes first), no, cat
    assert majority_answers(ANSWERS) == ["red", "two", "no", "cat"]
    maj = choose("majority", ANSWERS)
    assert maj.scores == {0.1: 0.0, 0.2: 1.0, 0.3: 3.0} and maj.alpha == 0.1


def test_ties_go_to_the_smaller_alpha_and_ends_never_win():
    flat = {a: ["x", "y"] for a in (0.0, 0.2, 0.4, 0.6)}
    conf = {a: [{"nll": 1.0, "entropy": 1.0, "tokens": 1}] * 2 for a in flat}
    for signal in SIGNALS:
        res = choose(signal, flat, conf)
        assert sorted(res.scores) == [0.2, 0.4] and res.alpha == 0.2, signal
    with pytest.raises(AdammsError, match="at least three candidates"):
        choose("majority", {0.0: ["x"], 0.1: ["x"]})


def test_confidence_signal_without_statistics_and_unknown_names():
    with pytest.raises(AdammsError, match="token statistics"):
        choose("nll", ANSWERS)
    with pytest.raises(AdammsError, match="signal='loss'"):
        choose("loss", ANSWERS)
    assert parse_signals("all") == list(SIGNALS) and parse_signals("nll;majority") == ["nll", "majority"]
    with pytest.raises(AdammsError, match="unknown selection signal 'nl'"):
        parse_signals("nl,entropy")


def test_token_stats_against_the_formula():
    from adamms_eval.harness.lmms_eval.loglikelihood import token_stats
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    target = torch.tensor([0, 1])
    p = torch.softmax(logits, -1)
    want_nll = -(math.log(p[0, 0]) + math.log(p[1, 1]))
    want_h = float(-(p * p.log()).sum())
    got = token_stats(logits, target)
    assert got["nll"] == pytest.approx(want_nll) and got["entropy"] == pytest.approx(want_h)
    assert got["tokens"] == 2 and got["greedy"] is False  # the second token is not the argmax


class Moving:
    def __init__(self):
        self.method, self.value, self.moves = make_method("linear"), None, []

    def set(self, alpha):
        self.value = alpha
        self.moves.append(alpha)


INPUTS = [SearchInput(d, f"{d}:p", None) for d in range(4)]


def _harness(model, scored):
    def answer(inputs):
        return [ANSWERS[model.value][i.doc_id] for i in inputs]

    def confidence(inputs, answers):
        assert answers == [ANSWERS[model.value][i.doc_id] for i in inputs]  # scored at the α that answered
        scored.append(len(inputs))
        return [CONF[model.value][i.doc_id] for i in inputs]
    return answer, confidence


def test_runner_scores_once_per_answer_and_resumes(tmp_path):
    model, scored = Moving(), []
    answer, confidence = _harness(model, scored)
    search = CoefficientSearch(model, sorted(ANSWERS), samples=4, cache_dir=tmp_path, identity={"x": 1},
                               progress=False, signal="nll", record_signals=parse_signals("all"))
    rec = search.run("t", INPUTS, answer, confidence=confidence)
    assert rec["alpha"] == 0.3 and rec["signal"] == "nll" and sum(scored) == 5 * 4
    sig = rec["signals"]
    assert sig["consistency_exact"]["alpha"] == 0.1 and sig["base_agreement"]["alpha"] == 0.1
    assert sig["entropy"]["alpha"] == 0.3 and sig["majority"]["scores"] == {"0.1": 0.0, "0.2": 1.0, "0.3": 3.0}
    assert set(sig) == {"consistency_exact", "consistency_embedding", "nll", "entropy", "base_agreement", "majority"}
    model2, scored2 = Moving(), []
    answer2, confidence2 = _harness(model2, scored2)
    search.merged = model2
    again = search.run("t", INPUTS, answer2, confidence=confidence2)
    assert scored2 == [] and model2.moves == [] and again["scores"] == rec["scores"]  # all from the cache


def test_runner_without_a_scorer():
    model = Moving()
    answer, _ = _harness(model, [])
    with pytest.raises(AdammsError, match="signal=entropy needs the token log-probabilities.*signal=consistency"):
        CoefficientSearch(model, sorted(ANSWERS), samples=4, progress=False, signal="entropy").run("t", INPUTS, answer)

    def broken(inputs, answers):
        raise NotImplementedError("no continuation scoring for lmms-eval backend 'x'")
    rec = CoefficientSearch(model, sorted(ANSWERS), samples=4, progress=False,
                            record_signals=["nll", "consistency"]).run("t", INPUTS, answer, confidence=broken)
    assert rec["alpha"] == 0.1 and "backend 'x'" in rec["signals"]["nll"]["unavailable"]
    with pytest.raises(AdammsError, match=r"signal=nll .*\(no continuation scoring for lmms-eval backend 'x'\)"):
        CoefficientSearch(model, sorted(ANSWERS), samples=4, progress=False,
                          signal="nll").run("t", INPUTS, answer, confidence=broken)


def test_signal_settings_checked_before_anything_loads():
    from adamms_eval.session.settings import parse_settings
    base = {"base": "/b", "other": "/o"}
    s, _ = parse_settings({**base, "signal": "NLL", "record_signals": "majority;entropy"})
    assert s.signal == "nll" and s.record_signals == ["majority", "entropy"] and s.describe()["signal"] == "nll"
    assert parse_settings(base)[0].signal == "consistency" and parse_settings(base)[0].record_signals == []
    with pytest.raises(AdammsError, match=r"signal=nl: choose signal=consistency or .*did you mean nll\?") as e:
        parse_settings({**base, "signal": "nl"})
    assert "\n" not in str(e.value)
    with pytest.raises(AdammsError, match=r"record_signals=loss: unknown selection signal 'loss'"):
        parse_settings({**base, "record_signals": "loss"})


def test_a_harness_that_cannot_score_says_so_in_one_line(monkeypatch):
    """The session refuses a confidence signal for a task without a scorer (VLMEvalKit's), before generating."""
    from adamms_eval.session import session as sess
    from adamms_eval.session.settings import flag_spell, parse_settings
    settings, _ = parse_settings({"base": "/b", "other": "/o", "signal": "entropy"}, spell=flag_spell)
    monkeypatch.setattr(sess, "preflight_plan", lambda s, spell: None)
    session = sess.MergeSession(settings, "Qwen2VLChat", "vlmeval", flag_spell)

    class Task:  # as harness/vlmeval's _Dataset
        name, output_dir, score, confidence = "MME", None, None, None

        def search_inputs(self):
            raise AssertionError("nothing is generated")
    with pytest.raises(AdammsError) as e:
        session._search(Task())
    assert str(e.value) == ("--signal entropy needs the token log-probabilities of the model's own answers, and the "
                            "vlmeval harness cannot score answers; use --signal consistency")


def test_harness_token_stats_match_the_generation_itself(zoo):
    """lmms-eval's llava_hf backend: the teacher-forced statistics of the model's own greedy answer equal the
    log-probabilities and entropies the greedy generation itself saw, token for token (prompt and answer aligned)."""
    from lmms_eval.models import get_model
    from PIL import Image
    from adamms_eval.harness.lmms_eval.loglikelihood import PROMPTS, continuation_stats
    backend = get_model("llava_hf", force_simple=True)(pretrained=str(zoo["llava_ov_hf"]), device="cpu",
                                                       device_map="cpu")
    image, question = Image.new("RGB", (56, 56), (200, 30, 30)), "What colour is the square?"
    processor, prompt, images = PROMPTS["llava_hf"](backend, question, [image])
    inputs = processor(text=[prompt], images=images, return_tensors="pt")
    out = backend.model.generate(**inputs, max_new_tokens=5, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True)
    new = out.sequences[0, inputs["input_ids"].shape[1]:]
    logp = torch.log_softmax(torch.stack(out.logits)[:, 0].float(), dim=-1)
    want_nll = float(-logp.gather(-1, new[:, None]).sum())
    want_entropy = float(-(logp.exp() * logp).sum())
    text = processor.tokenizer.decode(new, skip_special_tokens=True)
    got = continuation_stats(backend, "llava_hf", question, text, [image])
    assert got["tokens"] == len(new) and got["greedy"] is True
    assert got["nll"] == pytest.approx(want_nll, rel=1e-4) and got["entropy"] == pytest.approx(want_entropy, rel=1e-4)
