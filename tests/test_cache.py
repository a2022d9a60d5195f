"""The search answer cache: its identity (everything that can change an answer), per-rank files, torn lines,
per-batch appends, and exact generated / reused counts through CoefficientSearch."""
import json
import multiprocessing
import os
import threading

import pytest

from adamms_eval.search.runner import CoefficientSearch, SearchInput
from adamms_eval.fingerprints import digest
from adamms_eval.search.cache import GenerationCache
from adamms_eval.search.identity import search_identity
from adamms_eval.errors import AdammsError
from adamms_eval.merging.methods import make_method


# -- identity ---------------------------------------------------------------------------------------------
@pytest.fixture
def folders(tmp_path):
    out = {}
    for name in ("base", "other", "theta0"):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(name.encode() * 100)
        out[name] = d
    (tmp_path / "template.jinja").write_text("{{ messages }}")
    (tmp_path / "wrapper.py").write_text("# harness wrapper\n")
    return out


def _identity(folders, tmp_path, **change):
    args = dict(base=folders["base"], other=folders["other"], pretrained=folders["theta0"],
                method=make_method("ties", {"density": "0.5"}).describe(), harness="lmms-eval", backend="qwen2_vl",
                backend_args={"max_pixels": 12845056, "min_pixels": 3136, "dtype": "bfloat16",
                              "attn_implementation": "sdpa", "chat_template": str(tmp_path / "template.jinja"),
                              "system_prompt": "You are a helpful assistant.", "batch_size": 1},
                code_files=[tmp_path / "wrapper.py"])
    for k, v in change.items():
        if k in args["backend_args"] or k.startswith("new_"):
            args["backend_args"] = {**args["backend_args"], k: v}
        else:
            args[k] = v
    return digest(search_identity(**args))


@pytest.mark.parametrize("change", [
    {"max_pixels": 1003520}, {"min_pixels": 784}, {"dtype": "float16"}, {"attn_implementation": "eager"},
    {"system_prompt": "Answer briefly."}, {"batch_size": 4}, {"new_use_flash": True},
    {"backend": "llava_hf"}, {"harness": "vlmeval"}, {"method": make_method("ties", {"density": "0.3"}).describe()},
    {"method": make_method("dare_ties", {"density": "0.5"}).describe()}, {"pretrained": None},
])
def test_every_answer_setting_changes_the_identity(folders, tmp_path, change):
    assert _identity(folders, tmp_path) != _identity(folders, tmp_path, **change)


def test_file_contents_and_stamps_change_the_identity(folders, tmp_path):
    before = _identity(folders, tmp_path)
    assert _identity(folders, tmp_path) == before  # deterministic
    for edit in (lambda: (tmp_path / "template.jinja").write_text("{{ other }}"),  # chat template file content
                 lambda: (tmp_path / "wrapper.py").write_text("# edited wrapper\n"),  # harness code
                 lambda: os.utime(folders["theta0"] / "model.safetensors", ns=(1, 1)),  # θ0 weights touched
                 lambda: (folders["base"] / "generation_config.json").write_text("{}"),  # a new side file
                 lambda: os.utime(folders["other"] / "config.json", ns=(2, 2))):
        edit()
        now = _identity(folders, tmp_path)
        assert now != before
        before = now


def test_argument_spelling_does_not_change_the_identity(folders, tmp_path):
    a = _identity(folders, tmp_path)
    assert _identity(folders, tmp_path, max_pixels="12845056", batch_size="1") == a  # command-line strings
    assert _identity(folders, tmp_path, attn_implementation=" sdpa ") == a
    ident = search_identity(base=folders["base"], other=folders["other"], method={}, harness="lmms-eval", backend="x",
                            backend_args={"Use_Cache": "True", "unused": None})
    assert ident["backend_args"] == {"use_cache": "true"}
    assert ident["versions"]["torch"] and ident["versions"]["transformers"]
    assert ident["pretrained"] is None and "model.safetensors" in ident["base"]["files"]


# -- the cache file(s) --------------------------------------------------------------------------------------
def _lines(path):
    return path.read_bytes().decode().splitlines()


def test_cache_resumes_per_identity_and_rank(tmp_path):
    c = GenerationCache(tmp_path, {"pair": 1}, "task/a", rank=0)
    c.put(0.1, {"0:k": "red", "1:k": "blue"})
    assert c.path.name == "task_a.rank0.jsonl" and len(_lines(c.path)) == 2
    again = GenerationCache(tmp_path, {"pair": 1}, "task/a", rank=1)  # another rank reads rank 0's file
    assert again.get(0.1, "0:k") == "red" and again.get(0.2, "0:k") is None and not again.note
    assert GenerationCache(tmp_path, {"pair": 2}, "task/a").get(0.1, "0:k") is None  # another setup
    assert json.loads((c.folder / "identity.json").read_text()) == {"pair": 1}


def test_torn_last_line_loses_only_that_line(tmp_path):
    c = GenerationCache(tmp_path, {"pair": 1}, "t", rank=0)
    for i in range(5):
        c.put(0.2, {f"{i}:k": f"answer {i}"})
    data = c.path.read_bytes()
    c.path.write_bytes(data[:-7])  # killed in the middle of writing the last line
    torn = GenerationCache(tmp_path, {"pair": 1}, "t", rank=0)
    assert [torn.get(0.2, f"{i}:k") for i in range(5)] == ["answer 0", "answer 1", "answer 2", "answer 3", None]
    assert torn.dropped_lines == 1 and "1 torn or corrupt line" in torn.note
    torn.put(0.2, {"4:k": "answer 4"})  # the torn tail is cut before appending, not glued to the new line
    assert len(_lines(torn.path)) == 5
    whole = GenerationCache(tmp_path, {"pair": 1}, "t", rank=0)
    assert whole.dropped_lines == 0 and whole.get(0.2, "4:k") == "answer 4" and not whole.note


def test_corrupt_line_in_one_rank_keeps_the_other_ranks_answers(tmp_path):
    r0 = GenerationCache(tmp_path, {"pair": 1}, "t", rank=0)
    r1 = GenerationCache(tmp_path, {"pair": 1}, "t", rank=1)
    r0.put(0.0, {f"{i}:k": f"a{i}" for i in range(0, 10, 2)})
    r1.put(0.0, {f"{i}:k": f"a{i}" for i in range(1, 10, 2)})
    lines = _lines(r0.path)
    lines[2] = lines[2][:10] + "\x00garbage"
    r0.path.write_text("\n".join(lines) + "\n")
    fresh = GenerationCache(tmp_path, {"pair": 1}, "t", rank=0)
    assert sorted(k for (_, k) in fresh.entries) == sorted(f"{i}:k" for i in range(10) if i != 4)
    assert fresh.dropped == {"t.rank0.jsonl": 1}
    assert not list(tmp_path.rglob("*.corrupt"))  # nothing renamed: another rank may be writing


def _append_many(args):
    root, worker = args
    c = GenerationCache(root, {"pair": 1}, "t", rank=0)  # two independent runs sharing rank 0
    for i in range(150):
        c.put(0.1, {f"{worker}-{i}-{j}:k": "x" * 3000 for j in range(3)})


def test_concurrent_writers_never_tear_lines(tmp_path):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_append_many, [(tmp_path, 0), (tmp_path, 1)])
    c = GenerationCache(tmp_path, {"pair": 1}, "t", rank=0)
    assert c.dropped_lines == 0 and len(c.entries) == 2 * 150 * 3


# -- CoefficientSearch over the cache -----------------------------------------------------------------------
class Moving:
    """A model whose answers depend on the coefficient it is at (what a LazyMerge-backed harness does)."""

    def __init__(self):
        self.method = make_method("linear")
        self.value = None

    def set(self, alpha):
        self.value = alpha


class Harness:
    def __init__(self, model, fail_after_batches=None):
        self.model, self.calls, self.answered, self.fail_after = model, [], 0, fail_after_batches

    def __call__(self, inputs):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # the process dies here
        self.calls.append(len(inputs))
        self.answered += len(inputs)
        return [f"doc{i.doc_id}@{'small' if self.model.value < 0.25 + (i.doc_id % 3) * 0.1 else 'big'}" for i in inputs]


ALPHAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
INPUTS = [SearchInput(d, f"{d}:prompt", None) for d in range(20)]


def _search(cache_dir, harness, batch_size=4, gather=None, inputs=INPUTS, rank=0):
    s = CoefficientSearch(harness.model, ALPHAS, samples=12, seed=1, cache_dir=cache_dir, identity={"pair": 1},
                          progress=False, batch_size=batch_size, **({"gather": gather} if gather else {}))
    return s.run("task", inputs, harness, rank=rank)


def test_search_appends_per_batch_and_resumes_after_a_crash(tmp_path):
    ref = _search(tmp_path / "ref", Harness(Moving()))
    assert ref["generations"] == 7 * 12 and ref["reused_from_cache"] == 0
    crashing = Harness(Moving(), fail_after_batches=8)  # dies inside the 9th batch (3rd candidate, 3rd batch)
    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path / "c", crashing)
    assert crashing.calls == [4] * 8
    (path,) = (tmp_path / "c").rglob("*.jsonl")
    assert len(_lines(path)) == 8 * 4  # every finished batch is on disk, not only finished candidates
    h = Harness(Moving())
    again = _search(tmp_path / "c", h)
    assert again["generations"] == h.answered == 7 * 12 - 32 and again["reused_from_cache"] == 32
    assert again["alpha"] == ref["alpha"] and again["scores"] == ref["scores"]
    assert h.calls == [4] * 13  # the same fixed batches, only the missing ones
    # tear the last line by hand: one answer regenerated, not the file
    path.write_bytes(path.read_bytes()[:-5])
    h = Harness(Moving())
    torn = _search(tmp_path / "c", h)
    assert torn["generations"] == h.answered == 1 and torn["reused_from_cache"] == 7 * 12 - 1
    assert torn["cache_lines_dropped"] == 1 and any("1 torn or corrupt line" in n for n in torn["notes"])
    assert torn["alpha"] == ref["alpha"] and torn["scores"] == ref["scores"]
    h = Harness(Moving())
    assert _search(tmp_path / "c", h)["generations"] == 0 and h.answered == 0


def _two_ranks(cache_dir):
    """Two ranks in threads; gather is an all-gather over a barrier, as torch.distributed's would be."""
    barrier, slots, results, harnesses = threading.Barrier(2, timeout=60), [None, None], [None, None], []

    def gather_for(rank):
        def gather(obj):
            slots[rank] = obj
            barrier.wait()
            out = list(slots)
            barrier.wait()
            return out
        return gather

    def run(rank):
        h = Harness(Moving())
        harnesses.append(h)
        mine = [i for i in INPUTS if i.doc_id % 2 == rank]
        results[rank] = _search(cache_dir, h, gather=gather_for(rank), inputs=mine, rank=rank)

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_ranks_recover_from_a_corrupt_line_without_losing_the_other_ranks_answers(tmp_path):
    first = _two_ranks(tmp_path)
    assert first[0]["generations"] == 7 * 12 and first[0]["alpha_per_rank"] == [first[0]["alpha"]] * 2
    files = sorted(tmp_path.rglob("*.jsonl"))
    assert [f.name for f in files] == ["task.rank0.jsonl", "task.rank1.jsonl"]
    rank1_before = files[1].read_bytes()
    lines = _lines(files[0])
    lines[5] = "{\"alpha\": \"0.1\", \"inp"  # corrupt one of rank 0's lines
    files[0].write_text("\n".join(lines) + "\n")
    second = _two_ranks(tmp_path)
    for r in second:
        assert r["generations"] == 1 and r["reused_from_cache"] == 7 * 12 - 1 and r["cache_lines_dropped"] == 1
        assert r["alpha"] == first[0]["alpha"] and r["scores"] == first[0]["scores"]
    assert files[1].read_bytes() == rank1_before  # rank 1 regenerated nothing and its file was not touched


def test_batch_size_must_be_positive():
    with pytest.raises(AdammsError, match="batch size"):
        CoefficientSearch(Moving(), ALPHAS, batch_size=0)


# -- the base's own answers (linear α = 0) --------------------------------------------------------------------
class AtBaseCounting(Harness):
    def __call__(self, inputs):
        self.at_base = getattr(self, "at_base", 0) + (len(inputs) if self.model.value == 0.0 else 0)
        return super().__call__(inputs)


def _base_search(cache_dir, harness, pair, method="linear", alphas=ALPHAS):
    model = harness.model
    model.method = make_method(method, {"density": "0.5"} if method != "linear" else {})
    s = CoefficientSearch(model, alphas, samples=12, seed=1, cache_dir=cache_dir, identity={"pair": pair},
                          progress=False, batch_size=4, base_identity={"base": "b"})
    return s, s.run("task", INPUTS, harness, rank=0)


def test_a_search_with_another_model_reuses_the_base_answers(tmp_path):
    h = AtBaseCounting(Moving())
    _, first = _base_search(tmp_path, h, "base+A")
    assert first["generations"] == 7 * 12 and first["reused_base_answers"] == 0 and h.at_base == 12
    h2 = AtBaseCounting(Moving())
    _, second = _base_search(tmp_path, h2, "base+B")  # another other model: another identity, the same base
    assert second["generations"] == h2.answered == 6 * 12 and getattr(h2, "at_base", 0) == 0
    assert second["reused_base_answers"] == second["reused_from_cache"] == 12
    assert second["scores"] == first["scores"]  # Moving's answers depend on α only
    h3 = AtBaseCounting(Moving())  # a method none of whose candidates is the base: nothing to reuse
    _, ties = _base_search(tmp_path, h3, "base+A ties", method="ties", alphas=[0.0, 0.5, 1.0])
    assert ties["generations"] == 3 * 12 and ties["reused_base_answers"] == 0 and h3.at_base == 12


def test_answers_a_plain_run_made_at_the_base_are_not_generated_again(tmp_path):
    s, _ = _base_search(tmp_path / "warm", AtBaseCounting(Moving()), "other")
    s.cache_dir = tmp_path / "fresh"
    plain = Harness(Moving())
    plain.model.set(0.0)
    s.remember_base_answers("task", {i.key: a for i, a in zip(INPUTS, plain(INPUTS))})  # every input, not a subset
    h = AtBaseCounting(s.merged)
    rec = s.run("task", INPUTS, h, rank=0)
    assert rec["generations"] == h.answered == 6 * 12 and getattr(h, "at_base", 0) == 0
    assert rec["reused_base_answers"] == 12


def test_base_identity_ignores_the_merge_only(folders, tmp_path):
    from adamms_eval.search.identity import base_identity

    def base_of(**change):
        args = dict(base=folders["base"], other=folders["other"], pretrained=None,
                    method=make_method("linear").describe(), harness="lmms-eval", backend="qwen2_vl",
                    backend_args={"dtype": "bfloat16"}, code_files=[])
        args.update(change)
        return digest(base_identity(search_identity(**args)))
    same = base_of()
    assert base_of(other=folders["theta0"]) == same and base_of(pretrained=folders["theta0"]) == same
    assert base_of(method=make_method("ties", {"density": "0.3"}).describe()) == same
    assert base_of(backend_args={"dtype": "float16"}) != same and base_of(base=folders["other"]) != same
    assert base_of(backend="llava_hf") != same
