"""Label-free selection signals: which candidate coefficient a search picks from its own answers (`signal=`).

Every signal gives each *eligible* candidate a value (lower wins) computed from the same generated answers on the
same subset; the minimum is chosen, ties to the smaller coefficient (the model closer to the base, as
`rule.select_alpha`). Eligible are the interior candidates for every signal, as Algorithm 1 (line 10) scores
only i = 2 … n−1: the paper's rule never picks an end, so a signal compared against it picks from the same
candidates, and the two signals that compare with the base (base_agreement) or rank by confidence would
otherwise often pick an end trivially (α = 0 agrees with itself perfectly).

- `consistency` (the paper's rule, the default): D_i = DiffCnt(G_i, G_{i−1}) + DiffCnt(G_i, G_{i+1}), exact
  match after normalisation or 1 − cosine of sentence embeddings (`metric=`), `rule.select_alpha`.
- `nll` (AdaMerging's entropy minimisation made gradient-free, UQ-Merge's uncertainty): the mean over the subset
  of each answer's mean negative log-probability per token, under the merged model that produced it.
- `entropy`: the mean over the subset of each answer's mean per-token entropy of the model's next-token
  distribution along its own answer (teacher-forced on the answer, so no second generation).
- `base_agreement`: how many answers differ (exact, normalised) from the first candidate's (the base itself when
  the grid starts at 0, as `linear` α = 0 is the base bit for bit): stay where the base's answers hold.
- `majority`: how many answers differ from the per-input majority answer over all candidates (a pseudo-label
  by vote; a tie between answers goes to the one a smaller coefficient gave first).

Confidence values (`nll`, `entropy`) need per-answer token statistics from the harness ({"nll": Σ −log p,
"entropy": Σ H, "tokens": n}); an answer of zero tokens has no token to score and is left out of its
candidate's mean (a candidate with none scores +inf).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

from ..errors import AdammsError
from .rule import SearchResult, check_candidates, normalize_answer, select_alpha

SIGNALS = ("consistency", "nll", "entropy", "base_agreement", "majority")
CONFIDENCE_SIGNALS = ("nll", "entropy")
DEFAULT_SIGNAL = "consistency"
HELP = {"consistency": "generation consistency with the two neighbours (paper, Algorithm 1)",
        "nll": "mean negative log-probability per token of the model's own answers",
        "entropy": "mean next-token entropy along the model's own answers",
        "base_agreement": "answers that differ from the first candidate's (the base at α=0)",
        "majority": "answers that differ from the majority answer over all candidates"}


def needs_confidence(signals: Sequence[str]) -> bool:
    return any(s in CONFIDENCE_SIGNALS for s in signals)


def parse_signals(spec) -> list[str]:
    """`all`, a list, or a comma / space separated string of signal names (`record_signals=`)."""
    if spec is None or spec == "" or spec == []:
        return []
    names = spec if isinstance(spec, (list, tuple)) else str(spec).replace(";", ",").replace(" ", ",").split(",")
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    if names == ["all"]:
        return list(SIGNALS)
    bad = [n for n in names if n not in SIGNALS]
    if bad:
        raise AdammsError(f"unknown selection signal {bad[0]!r}: choose from {', '.join(SIGNALS)} (or all)")
    return list(dict.fromkeys(names))


def _interior(alphas: list[float]) -> list[float]:
    return alphas[1:-1]


def _pick(signal: str, alphas: list[float], values: dict[float, float]) -> SearchResult:
    best = min(values, key=lambda a: (values[a], a))
    metric = "tokens" if signal in CONFIDENCE_SIGNALS else "exact"
    return SearchResult(best, values, metric, {}, "neighbours", alphas, signal=signal)


def mean_per_token(stats: Sequence[dict], field: str) -> float:
    """Mean over answers of stats[field] / stats["tokens"] (answers of zero tokens left out; none left: +inf)."""
    per = [float(s[field]) / int(s["tokens"]) for s in stats if int(s["tokens"]) > 0]
    return sum(per) / len(per) if per else math.inf


def majority_answers(responses: dict[float, Sequence[str]]) -> list[str]:
    """Per input, the most frequent normalised answer over the candidates (ties: the one seen first, smaller α)."""
    alphas = sorted(responses)
    out = []
    for j in range(len(responses[alphas[0]])):
        votes = [normalize_answer(responses[a][j]) for a in alphas]
        counts = Counter(votes)
        top = max(counts.values())
        out.append(next(v for v in votes if counts[v] == top))
    return out


def choose(signal: str, responses: dict[float, Sequence[str]], confidence: dict[float, Sequence[dict]] | None = None,
           metric: str = "exact", embedding_model: str | None = None) -> SearchResult:
    """The candidate `signal` picks from these answers (and, for nll / entropy, their token statistics)."""
    if signal not in SIGNALS:
        raise AdammsError(f"signal={signal!r}: choose one of {', '.join(SIGNALS)}")
    if signal == "consistency":
        res = select_alpha(responses, metric, embedding_model)
        res.signal = signal
        return res
    alphas = check_candidates(sorted(responses))
    if len({len(responses[a]) for a in alphas}) != 1:
        raise AdammsError("every candidate must answer the same inputs")
    norm = {a: [normalize_answer(x) for x in responses[a]] for a in alphas}
    if signal in CONFIDENCE_SIGNALS:
        if confidence is None or any(a not in confidence for a in alphas):
            raise AdammsError(f"signal={signal} needs the token statistics of every candidate's answers")
        values = {a: mean_per_token(confidence[a], signal) for a in _interior(alphas)}
    elif signal == "base_agreement":
        ref = norm[alphas[0]]
        values = {a: float(sum(x != y for x, y in zip(norm[a], ref))) for a in _interior(alphas)}
    else:
        ref = majority_answers(responses)
        values = {a: float(sum(x != y for x, y in zip(norm[a], ref))) for a in _interior(alphas)}
    return _pick(signal, alphas, values)
