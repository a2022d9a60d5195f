"""mPLUG-Owl2's inputs as the original builds them: the `mplug_owl2` conversation template, image tokens (-200) in the
input ids, images padded to a square and CLIP-normalised. `model_inputs` is the one encoder the lmms-eval backend,
the VLMEvalKit wrapper and the check command share."""
from __future__ import annotations

import torch

from ..common import CLIP_MEAN, CLIP_STD, left_pad, pil_to_tensor
from .configuration import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX, MPLUGOwl2Config


def build_prompt(question: str, with_image: bool = True) -> str:
    """Conversation template "mplug_owl2" (no system prompt): `USER: <|image|>{question} ASSISTANT:`."""
    return f"USER: {DEFAULT_IMAGE_TOKEN if with_image else ''}{question} ASSISTANT:"


def tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    """Tokenize the text between image tokens separately (BOS once, at the start) and put IMAGE_TOKEN_INDEX
    where each `<|image|>` was."""
    chunks = [tokenizer(c).input_ids if c else [] for c in prompt.split(DEFAULT_IMAGE_TOKEN)]
    bos = tokenizer.bos_token_id
    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == bos:
        ids, offset = [bos], 1
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])  # every chunk was tokenized with its own BOS
    return ids


def expand_to_square(image, fill: tuple[int, int, int]):
    """Pad the shorter side symmetrically with `fill` (the mean colour), as the original's expand2square."""
    from PIL import Image
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    out = Image.new(image.mode, (side, side), fill)
    out.paste(image, ((side - w) // 2, (side - h) // 2))
    return out


def process_images(images, image_size: int = 448, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """(n, 3, image_size, image_size): pad to square by the mean colour, bicubic resize, CLIP normalisation."""
    fill = tuple(int(m * 255) for m in mean)
    return torch.stack([pil_to_tensor(expand_to_square(im.convert("RGB"), fill), image_size, mean, std)
                        for im in images])


def image_settings(folder, config: MPLUGOwl2Config) -> tuple[int, tuple, tuple]:
    """Image side, mean and std from the checkpoint's preprocessor_config.json (CLIP's at the config's size
    without one)."""
    import json
    from pathlib import Path
    file = Path(folder) / "preprocessor_config.json"
    side = config.visual_config["visual_model"]["image_size"]
    if not file.is_file():
        return side, CLIP_MEAN, CLIP_STD
    pp = json.loads(file.read_text())
    crop = pp.get("crop_size", side)
    side = crop.get("height", side) if isinstance(crop, dict) else int(crop)
    return side, tuple(pp.get("image_mean", CLIP_MEAN)), tuple(pp.get("image_std", CLIP_STD))


def model_inputs(tokenizer, prompt: str, images=(), image_size: int = 448, mean=CLIP_MEAN, std=CLIP_STD,
                 device="cpu", dtype=None) -> dict:
    """A batch of one for the model: `prompt` (with one `<|image|>` per image) as input ids with IMAGE_TOKEN_INDEX
    where each image goes, and the images as `process_images` prepares them, in `dtype`."""
    inputs = {"input_ids": torch.tensor([tokenizer_image_token(prompt, tokenizer)], device=device)}
    if images:
        inputs["images"] = process_images(images, image_size, mean, std).to(device, dtype)
    return inputs


def batch_inputs(tokenizer, prompts: list[str], images: list[list], image_size: int = 448, mean=CLIP_MEAN,
                 std=CLIP_STD, device="cpu", dtype=None) -> dict:
    """`model_inputs` for several prompts at once: input ids left-padded with attention_mask 0 there (the model's
    splice drops padding before putting each image's tokens in place and pads the spliced rows on the left again;
    positions count only unpadded tokens), every row's images in row order."""
    rows = [torch.tensor(tokenizer_image_token(p, tokenizer)) for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    inputs = {"input_ids": left_pad(rows, pad).to(device),
              "attention_mask": left_pad([torch.ones(len(r), dtype=torch.long) for r in rows], 0).to(device)}
    flat = [im for ims in images for im in ims]
    if flat:
        inputs["images"] = process_images(flat, image_size, mean, std).to(device, dtype)
    return inputs
