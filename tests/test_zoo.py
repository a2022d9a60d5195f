"""The zoo: a deterministic world, a real tokenizer, and a reduced zoo that trains in CI time, loads with the
transformers Auto classes and lmms-eval's backends, and beats chance on its own skills."""
import json

import pytest

from adamms_eval.zoo import world
from adamms_eval.zoo.build import SPECS, build


def _png(img):
    import io
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_world_is_deterministic_and_answers_match_scenes():
    for skill in world.SKILLS:
        a, b = world.examples(skill, 5, 7), world.examples(skill, 5, 7)
        assert [_png(x.image) for x in a] == [_png(x.image) for x in b]
        assert [x.answer for x in a] == [x.answer for x in b]
        assert all(x.answer in world.ANSWERS[skill] for x in a)
    counts = world.examples("count", 30, 0)
    assert {e.answer for e in counts} == set(world.COUNT_WORDS)
    img = world.example("colour", 3)
    rgb = world.COLOURS[img.scene["colour"]]
    assert rgb in {c for _, c in img.image.getcolors(world.SIZE * world.SIZE)}  # the answer's colour is drawn
    with pytest.raises(ValueError, match="unknown skill"):
        world.examples("smell", 1, 0)


def test_language_side_skills_read_the_same_facts():
    # `more` is the count scene with the count + 1 as answer; `fruit` and `composite` the colour scene's facts
    for m in world.examples("more", 20, 5):
        assert set(m.scene) == {"colour", "shape", "size", "count"}  # a count scene
        assert world.MORE_WORDS.index(m.answer) == m.scene["count"] - 1  # MORE_WORDS[c - 1] is c + 1
    assert {m.answer for m in world.examples("more", 40, 0)} == set(world.MORE_WORDS)
    for e in world.examples("fruit", 20, 0):
        assert e.answer == world.FRUITS[e.scene["colour"]]
        assert world.COLOURS[e.scene["colour"]] in {c for _, c in e.image.getcolors(world.SIZE * world.SIZE)}
    assert {e.answer for e in world.examples("composite", 200, 0)} == set(world.ANSWERS["composite"])


def test_worlds():
    dis, gen = world.get_world("disjoint"), world.get_world("generalists")
    assert world.GROUP_A == ("colour", "shape", "count", "word") and world.GROUP_B == ("shape", "count", "position", "size")
    assert dis.language_side == () and set(dis.skills) == set(dis.model_a.mixture) | set(dis.model_b.mixture)
    # generalists (DESIGN.md): both tuned on every skill, θ0 reads only the perception ones
    assert set(gen.model_a.mixture) == set(gen.model_b.mixture) == set(gen.skills)
    assert gen.language_side == ("more", "fruit", "composite")
    assert gen.model_a.mixture != gen.model_b.mixture and gen.model_a.steps_scale > gen.model_b.steps_scale
    with pytest.raises(ValueError, match="unknown zoo world"):
        world.get_world("flat")


def test_task_seeds_are_disjoint_from_training():
    spec = SPECS["full"]
    # training examples use seeds seed*100_000 + skill*10_000 + i (i < ft_examples); tasks start at TASK_SEED
    most = max(w for v in world.WORLDS.values() for t in (v.model_a, v.model_b) for w in t.mixture.values())
    assert spec.ft_examples * most < 10_000 and 100_000 * 100 < world.TASK_SEED


@pytest.fixture(scope="module")
def ci_zoo(tmp_path_factory):
    return build(tmp_path_factory.mktemp("zoo") / "ci", size="ci", log=lambda *_: None)


def test_ci_zoo_loads_and_learns(ci_zoo):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
    report = json.loads((ci_zoo / "zoo.json").read_text())
    a = AutoModelForImageTextToText.from_pretrained(ci_zoo / "model_a")
    b = AutoModelForImageTextToText.from_pretrained(ci_zoo / "model_b")
    assert type(a).__name__ == "Qwen2VLForConditionalGeneration"
    assert type(b).__name__ == "LlavaOnevisionForConditionalGeneration"
    AutoModelForCausalLM.from_pretrained(ci_zoo / "theta0")
    tok = AutoTokenizer.from_pretrained(ci_zoo / "theta0")
    text = "a big red circle. What colour is the shape? red."
    assert tok.decode(tok(text).input_ids) == text
    assert len(tok(text).input_ids) < len(text) / 2  # the world's words are whole tokens, not bytes
    for name in ("model_a", "model_b"):
        proc = AutoProcessor.from_pretrained(ci_zoo / name)
        assert proc.tokenizer.eos_token == "<|im_end|>"
        assert proc.tokenizer.convert_tokens_to_ids("red") == tok.convert_tokens_to_ids("red")  # one vocabulary
    # each model beats chance on the skills it was trained on, summed over them (the reduced zoo trains ~1 min)
    for name in ("model_a", "model_b"):
        own = report["groups"][name]
        assert sum(report["accuracy"][name][s] for s in own) > sum(report["chance"][s] for s in own)


def test_ci_zoo_is_cached(ci_zoo):
    before = (ci_zoo / "zoo.json").stat().st_mtime
    assert build(ci_zoo, size="ci", log=lambda *_: None) == ci_zoo
    assert (ci_zoo / "zoo.json").stat().st_mtime == before


def test_ci_generalists_zoo_builds_and_a_beats_chance(tmp_path):
    """The reduced generalists world (~1.5-2.5 min): both models tuned on all six skills with the world's mixtures.
    At this size only A beats chance summed over the six (measured: A 1.83, B 1.04, chance 1.22); B's LLaVA-OneVision
    needs the full size (its shipped full-size build clears chance + 0.15 on every task, test_evidence.py)."""
    out = build(tmp_path / "gen", size="ci", world_name="generalists", log=lambda *_: None)
    report = json.loads((out / "zoo.json").read_text())
    assert report["world"] == "generalists" and list(report["accuracy"]["model_a"]) == list(world.WORLDS["generalists"].skills)
    assert report["model_a"]["steps"] > report["model_b"]["steps"]
    assert report["model_b"]["examples_per_skill"]["fruit"] > report["model_a"]["examples_per_skill"]["fruit"]
    assert sum(report["accuracy"]["model_a"].values()) > sum(report["chance"].values())
