"""doc_to_* / process_results hooks for the offline adamms_shapes tasks."""

import re
import string

_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text):
    """Lower-case, drop punctuation, collapse whitespace (same spirit as exact_match with
    ignore_case + ignore_punctuation in lmms_eval.api.metrics.exact_match_hf_evaluate)."""
    if text is None:
        return ""
    return re.sub(r"\s+", " ", str(text).lower().translate(_PUNCT)).strip()


def _kw(lmms_eval_specific_kwargs):
    kw = lmms_eval_specific_kwargs or {}
    return kw.get("pre_prompt", ""), kw.get("post_prompt", "")


def shapes_doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def shapes_color_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    pre, post = _kw(lmms_eval_specific_kwargs)
    return f"{pre}{doc['question']}{post}"


def shapes_yesno_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    pre, post = _kw(lmms_eval_specific_kwargs)
    return f"{pre}{doc['yn_question']}{post}"


def shapes_mc_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    pre, post = _kw(lmms_eval_specific_kwargs)
    return f"{pre}{doc['question']}{post}"


def shapes_mc_doc_to_choice(doc):
    return list(doc["choices"])


def shapes_exact_process_results(doc, results):
    pred = normalize_answer(results[0])
    return {"exact_match": float(pred == normalize_answer(doc["answer"]))}


def shapes_yesno_process_results(doc, results):
    pred = normalize_answer(results[0])
    # first word only, like MME's parse: "Yes, it is." -> "yes"
    pred = pred.split(" ")[0] if pred else ""
    return {"exact_match": float(pred == normalize_answer(doc["yn_answer"]))}
