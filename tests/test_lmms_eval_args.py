"""issue 10.1/10.4/10.5: every `--model adamms` argument and the pair's plan are checked before any weights load.

The real lmms-eval model class is constructed in-process with its backend replaced by a spy: a bad argument must
raise AdammsError (one line naming the fix) and the backend must never have been instantiated."""
import shutil

import pytest

pytest.importorskip("lmms_eval")
from adamms_eval.errors import AdammsError  # noqa: E402


@pytest.fixture()
def spy(monkeypatch):
    import adamms_eval.harness.lmms_eval.model as m
    loaded = []
    real = m.get_model

    def get_model(name, force_simple=False):
        cls = real(name, force_simple=force_simple)

        class Spy(cls):
            def __init__(self, *a, **kw):
                loaded.append(name)
                raise AssertionError("the backend was loaded before the arguments were checked")
        return Spy
    monkeypatch.setattr(m, "get_model", get_model)
    return m.Adamms, loaded


@pytest.mark.parametrize("extra, expected", [
    ({"metric": "cosine"}, "metric=cosine: choose metric=exact or metric=embedding"),
    ({"alpha": 1.5}, "alpha=1.5: linear's alpha must be in [0, 1]"),
    ({"alphas": "0,0.3,0.6x"}, "[0,0.3,0.6], or 0;0.3;0.6"),
    ({"alphas": "[0,0.3]"}, "alpha=auto needs at least three candidates"),
    ({"alphas": "[0,0.5,1.5]"}, "1.5 outside linear's alpha range"),
    ({"search_report": "ful"}, "did you mean full?"),
    ({"serach_samples": 8}, "did you mean search_samples?"),
    ({"max_pixel": 1024}, "did you mean max_pixels?"),
    ({"density": 0.5}, "density=0.5 does not belong to method linear (it takes only alpha); density is a parameter "
                       "of ties, dare_linear, dare_ties"),
    ({"method": "ties"}, "add pretrained=DIR"),
    ({"method": "tie"}, "did you mean ties?"),
    ({"method": "dare_ties", "pretrained": "QWEN2_LM", "density": 2}, "density must be in (0, 1]"),
    ({"method": "dare_ties", "pretrained": "QWEN2_LM", "alpha": 0.3, "lambda": 0.8},
     "alpha=0.3 and lambda=0.8 both give the coefficient of dare_ties (lambda) and disagree"),
    ({"other": "LLAVA15"}, "language models differ"),
    ({"search_samples": "many"}, "search_samples=many: expected a whole number"),
    ({"backend": "qwen2vl"}, "backend=qwen2vl: lmms-eval has no such model; did you mean backend=qwen2_vl?"),
    ({"signal": "nl"}, "signal=nl: choose signal=consistency or"),
    ({"record_signals": "nll;loss"}, "unknown selection signal 'loss'"),
    ({"signal": "entropy", "backend": "qwen2_5_vl"}, "signal=entropy needs the token log-probabilities of the "
                                                     "model's own answers, and lmms-eval's qwen2_5_vl backend cannot"),
])
def test_bad_argument_fails_before_the_base_loads(zoo, spy, extra, expected):
    Adamms, loaded = spy
    options = {"base": str(zoo["qwen2_vl"]), "other": str(zoo["llava_ov_hf"]), **extra}
    names = {"QWEN2_LM": zoo["qwen2_lm"], "LLAVA15": zoo["llava15_hf"]}
    options = {k: str(names.get(v, v)) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(AdammsError) as e:
        Adamms(**options)
    assert expected in str(e.value) and "--pretrained" not in str(e.value) and "\n" not in str(e.value)
    assert loaded == []


def test_unknown_base_architecture_names_the_backend_argument(zoo, spy, tmp_path):
    Adamms, loaded = spy
    base = tmp_path / "base"
    shutil.copytree(zoo["llava15_hf"], base)
    cfg = (base / "config.json").read_text().replace('"model_type": "llava"', '"model_type": "fuyu"', 1)
    (base / "config.json").write_text(cfg)
    with pytest.raises(AdammsError, match="no lmms-eval backend known for model_type 'fuyu'; pass backend=NAME"):
        Adamms(base=str(base), other=str(zoo["llava15_hf"]))
    assert loaded == []


def test_a_backend_may_score_choices_itself():
    from adamms_eval.harness.lmms_eval.loglikelihood import continuation_nll

    class Port:
        def continuation_nll(self, ctx, continuation, visuals):
            return (len(ctx) + len(continuation) + len(visuals), True)
    assert continuation_nll(Port(), "some_port", "ab", "c", [1]) == (4, True)
    with pytest.raises(NotImplementedError, match="continuation_nll"):
        continuation_nll(object(), "some_port", "ab", "c", [])


def test_spy_sees_a_valid_setting_load(zoo, spy):
    """Control for the tests above: with valid arguments the backend is reached (after the preflight plan)."""
    Adamms, loaded = spy
    with pytest.raises(AssertionError, match="was loaded"):
        Adamms(base=str(zoo["qwen2_vl"]), other=str(zoo["llava_ov_hf"]), method="paper_dare_ties",
               pretrained=str(zoo["qwen2_lm"]), alpha="auto", alphas="0.2;0.6;1.0", max_pixels=1024)
    assert loaded == ["qwen2_vl"]


def test_port_backend_takes_its_parents_arguments(zoo, spy):
    """A backend whose __init__ passes **kwargs to its parent (the CogVLM port) accepts the parent's arguments."""
    Adamms, loaded = spy
    with pytest.raises(AssertionError, match="was loaded"):
        Adamms(base=str(zoo["cogvlm"]), other=str(zoo["llava15_hf"]), alpha=0.3, template="chat",
               tokenizer=str(zoo["llava15_hf"]), dtype="float32")
    assert loaded == ["adamms_cogvlm"]
    with pytest.raises(AdammsError, match="did you mean template"):
        Adamms(base=str(zoo["cogvlm"]), other=str(zoo["llava15_hf"]), alpha=0.3, templat="chat")


def test_coefficient_names_and_defaults():
    """alpha= and lambda= name the same coefficient (agreeing values are fine); the default grid is the method's."""
    from adamms_eval.merging.methods import default_candidates
    from adamms_eval.search.rule import parse_alphas
    from adamms_eval.session import parse_settings
    s, _ = parse_settings({"base": "a", "other": "b", "alpha": 0.3, "lambda": "0.30"})
    assert (s.alpha, s.coefficient, s.given_as) == (0.3, "alpha", "alpha")
    s, _ = parse_settings({"base": "a", "other": "b", "method": "paper_ties", "pretrained": "p", "lambda": "auto"})
    assert s.auto and s.coefficient == "lambda" and s.alphas == parse_alphas(default_candidates("ties"))
    assert s.describe()["method"]["params"]["trim"] == "global"  # the preset's settings are recorded
