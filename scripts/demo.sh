#!/usr/bin/env bash
# The shipped tiny demo: build tiny Qwen2-VL / LLaVA-OneVision checkpoints that share a Qwen2 θ0,
# show the merge plan, merge LLaVA-OneVision into Qwen2-VL at α=0.3, and load + run the result.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${DEMO_OUT:-demo_out}
export HF_HUB_OFFLINE=1

"$BIN/python" -m adamms_eval.tiny "$OUT/zoo" qwen2_lm qwen2_vl llava_ov_hf > /dev/null
echo "== adamms plan"
"$BIN/adamms" plan --base "$OUT/zoo/qwen2_vl" --other "$OUT/zoo/llava_ov_hf" --pretrained "$OUT/zoo/qwen2_lm"
echo "== adamms merge (linear, alpha 0.3)"
"$BIN/adamms" merge --base "$OUT/zoo/qwen2_vl" --other "$OUT/zoo/llava_ov_hf" --alpha 0.3 --out "$OUT/merged" --force
echo "== load the merged checkpoint with from_pretrained and generate"
"$BIN/python" - "$OUT/merged" <<'PY'
import sys
import numpy as np
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
path = sys.argv[1]
model = AutoModelForImageTextToText.from_pretrained(path)
proc = AutoProcessor.from_pretrained(path)
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the shape?"}]}]
prompt = proc.apply_chat_template(messages, add_generation_prompt=True)
image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 56, 3), dtype=np.uint8))
inputs = proc(text=[prompt], images=[image], return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
print("generated token ids:", out[0, inputs.input_ids.shape[1]:].tolist())
print(f"demo OK: {path} loads as {type(model).__name__} and generates")
PY
