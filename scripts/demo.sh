#!/usr/bin/env bash
# The shipped tiny demo: build tiny Qwen2-VL / LLaVA-OneVision checkpoints that share a Qwen2 θ0,
# show the merge plan, merge LLaVA-OneVision into Qwen2-VL at α=0.3 and load + run the result, then
# run lmms-eval with `--model adamms ... alpha=auto` on the offline shapes tasks (the main job).
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

echo "== lmms-eval --model adamms alpha=auto (per-task coefficient search on the offline shapes tasks)"
"$BIN/python" tasks/make_offline_tasks.py > /dev/null
rm -rf "$OUT/lmms_eval"
"$BIN/lmms-eval" --model adamms \
  --model_args "base=$OUT/zoo/qwen2_vl,other=$OUT/zoo/llava_ov_hf,alpha=auto,cache_dir=$OUT/cache" \
  --tasks adamms_shapes --include_path tasks --limit "${DEMO_LIMIT:-12}" \
  --output_path "$OUT/lmms_eval" --log_samples
# lmms-eval exits 0 even when evaluation fails: the results and search files are the real signal
results=$(find "$OUT/lmms_eval" -name '*_results.json' | head -n 1)
record=$(find "$OUT/lmms_eval" -name adamms_search.json | head -n 1)
if [[ -z "$results" || -z "$record" ]]; then
  echo "demo FAILED: lmms-eval wrote no results (see the log above)" >&2
  exit 1
fi
"$BIN/python" - "$record" <<'PY'
import json, sys
rec = json.load(open(sys.argv[1]))
for task, r in rec["tasks"].items():
    scores = ", ".join(f"{a}: {d:g}" for a, d in r["scores"].items())
    print(f"{task:24} chose {r['coefficient']}={r['alpha']:g}   D = {{{scores}}}   n={r['subset_size']}")
print(f"search record and plots: {sys.argv[1].rsplit('/', 1)[0]}")
PY
