"""doc_to_* / process_results hooks for the zoo tasks (one task per skill of adamms_eval.zoo.world)."""

import re
import string

_PUNCT = str.maketrans("", "", string.punctuation)
POST_PROMPT = "\nAnswer the question using a single word or phrase."  # = adamms_eval.zoo.world.POST_PROMPT


def normalize_answer(text):
    """Lower-case, drop punctuation, collapse whitespace."""
    return re.sub(r"\s+", " ", str(text or "").lower().translate(_PUNCT)).strip()


def zoo_doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def zoo_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question']}{kw.get('post_prompt', POST_PROMPT)}"


def zoo_process_results(doc, results):
    return {"exact_match": float(normalize_answer(results[0]) == normalize_answer(doc["answer"]))}
