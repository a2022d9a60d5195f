"""Which embedding / lm_head rows of two models mean the same token.

With both tokenizers: a row is merged where the token string at that id agrees (Qwen2-VL and
LLaVA-OneVision share ids < 151646 and differ after). Without them: the common prefix up to the
smaller vocabulary. Rows of the base outside the alignment keep the base's values.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VocabAlignment:
    count: int
    prefix: bool                      # rows [0, count) when True, else the rows in `ids`
    ids: torch.Tensor | None = None

    def select(self, t: torch.Tensor) -> torch.Tensor:
        return t[: self.count] if self.prefix else t.index_select(0, self.ids)

    def scatter(self, full: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.prefix:
            full[: self.count] = rows
        else:
            full.index_copy_(0, self.ids, rows)
        return full


def token_table(tokenizer) -> dict[int, str] | None:
    """id -> token string from a tokenizer object or a model directory; None when there is none."""
    if tokenizer is None:
        return None
    if hasattr(tokenizer, "get_vocab"):
        return {i: s for s, i in tokenizer.get_vocab().items()}
    path = Path(tokenizer)
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer
        return {i: s for s, i in Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab(True).items()}
    if (path / "tokenizer.model").is_file() or (path / "vocab.json").is_file():
        try:
            from transformers import AutoTokenizer
            return {i: s for s, i in AutoTokenizer.from_pretrained(str(path)).get_vocab().items()}
        except Exception as e:  # a tokenizer that needs remote code or missing packages
            log.warning("could not read the tokenizer in %s (%s)", path, e)
    return None


def _rows(side) -> int | None:
    for slot in ("embed_tokens.weight", "lm_head.weight"):
        ref = side.original.get(slot)
        if ref is not None:
            return side.source.info(ref.key).shape[0]
    return None


def align_vocab(base, other, theta0, base_tokenizer, other_tokenizer) -> tuple[VocabAlignment, str]:
    sizes = [n for n in (_rows(base), _rows(other), _rows(theta0) if theta0 else None) if n is not None]
    limit = min(sizes) if sizes else 0
    a, b = token_table(base_tokenizer), token_table(other_tokenizer)
    if a is None or b is None:
        missing = "base" if a is None else "other"
        note = (f"no tokenizer for the {missing} model: merged the common prefix of {limit} rows "
                f"(base {_rows(base)}, other {_rows(other)} rows)")
        return VocabAlignment(limit, True), note
    ids = [i for i in range(limit) if i in a and a[i] == b.get(i)]
    disagree = sum(1 for i in range(limit) if i in a and i in b and a[i] != b[i])
    note = (f"tokenizers compared: {len(ids)} of {limit} common rows merged (same token at the same id), "
            f"{disagree} ids with different tokens and {limit - len(ids) - disagree} untrained/padding rows kept "
            f"from the base (base {_rows(base)}, other {_rows(other)} rows)")
    if ids == list(range(len(ids))):
        return VocabAlignment(len(ids), True), note
    return VocabAlignment(len(ids), False, torch.tensor(ids, dtype=torch.long)), note


