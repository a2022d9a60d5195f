"""CogVLM-chat's inputs as the original builds them: templates, image placeholders of token type 1, image tensors.
`model_inputs` is the one encoder the lmms-eval backend, the VLMEvalKit wrapper and the check command share."""
from __future__ import annotations

import torch

from ..common import left_pad, pil_to_tensor
from .configuration import LANGUAGE_TOKEN_TYPE, TEMPLATES, VISION_TOKEN_TYPE, CogVLMConfig


def history_to_prompt(template_version: str, history, query: str) -> str:
    """CogVLM's templates: `base` = the query; `chat` = "Question: {q} Answer:"; `vqa` = "Question: {q} Short answer:";
    earlier turns as "Question: {q} Answer: {a}\\n"."""
    if template_version not in TEMPLATES:
        raise ValueError(f"unknown CogVLM template_version {template_version!r}; choose one of {', '.join(TEMPLATES)}")
    if template_version == "base":
        return query
    answer = "Short answer:" if template_version == "vqa" else "Answer:"
    past = "".join(f"Question: {q} {answer} {a}\n" for q, a in (history or []))
    return f"{past}Question: {query} {answer}"


def build_conversation_input_ids(config: CogVLMConfig, tokenizer, *, query: str, history=None, images=None,
                                 template_version: str | None = None) -> dict:
    """BOS, then (for one image) num_image_positions pad-id placeholders of token type 1, then the prompt's tokens.

    Returns 1-D `input_ids`, `token_type_ids`, `attention_mask` and `images` (a list with one (3, S, S) tensor,
    resized bicubic to the config's image_size with CLIP mean/std, or empty)."""
    if images is not None and len(images) > 1:
        raise ValueError("CogVLM takes at most one image per conversation")
    text = history_to_prompt(template_version or config.template_version, history, query)
    return encode_prompt(config, tokenizer, text, images)


def encode_prompt(config: CogVLMConfig, tokenizer, text: str, images=None) -> dict:
    """build_conversation_input_ids for an already templated text (scoring appends a continuation to it)."""
    ids, types, pixels = [tokenizer.bos_token_id], [LANGUAGE_TOKEN_TYPE], []
    if images:
        size = config.vision_config["image_size"]
        pixels = [pil_to_tensor(images[0], size)]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids += [pad] * config.num_image_positions
        types += [VISION_TOKEN_TYPE] * config.num_image_positions
    text_ids = tokenizer.encode(text, add_special_tokens=False)
    ids += text_ids
    types += [LANGUAGE_TOKEN_TYPE] * len(text_ids)
    return {"input_ids": torch.tensor(ids, dtype=torch.long), "token_type_ids": torch.tensor(types, dtype=torch.long),
            "attention_mask": torch.ones(len(ids), dtype=torch.long), "images": pixels}


def model_inputs(config: CogVLMConfig, tokenizer, text: str, images=None, device="cpu", dtype=None) -> dict:
    """A batch of one for the model: `encode_prompt`'s ids, token types and mask on `device`, the image stacked in
    `dtype` (the model's own: its features are spliced into the embeddings). `text` is already templated
    (`history_to_prompt`), with a scored continuation appended where there is one."""
    enc = encode_prompt(config, tokenizer, text, images)
    inputs = {k: enc[k][None].to(device) for k in ("input_ids", "token_type_ids", "attention_mask")}
    if enc["images"]:
        inputs["images"] = torch.stack(enc["images"]).to(device, dtype)
    return inputs


def batch_inputs(config: CogVLMConfig, tokenizer, texts: list[str], images: list[list], device="cpu",
                 dtype=None) -> dict:
    """`model_inputs` for several prompts at once, left-padded: padding has attention_mask 0 and text token type (it
    neither advances the position ids nor counts as an image), the images of the rows that have one stacked in row
    order (the model splices them into the image positions in that order)."""
    encs = [encode_prompt(config, tokenizer, t, ims[:1] if ims else None) for t, ims in zip(texts, images)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    inputs = {"input_ids": left_pad([e["input_ids"] for e in encs], pad),
              "token_type_ids": left_pad([e["token_type_ids"] for e in encs], LANGUAGE_TOKEN_TYPE),
              "attention_mask": left_pad([e["attention_mask"] for e in encs], 0)}
    inputs = {k: v.to(device) for k, v in inputs.items()}
    pixels = [p for e in encs for p in e["images"]]
    if pixels:
        inputs["images"] = torch.stack(pixels).to(device, dtype)
    return inputs
