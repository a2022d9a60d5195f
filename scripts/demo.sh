#!/usr/bin/env bash
# The demo, on the zoo weights shipped in zoo_weights/<world> (no training; DEMO_WORLD=generalists by default, the
# paper's main case, or disjoint): write the zoo's lmms-eval tasks, then evaluate with lmms-eval model A (Qwen2-VL),
# model B (LLaVA-OneVision) and `--model adamms ... alpha=auto` (B merged into A, α searched per task without
# labels), and print per task the chosen α beside the three scores. DEMO_TRAIN=1 trains the zoo instead
# (`adamms zoo build --world W`, ~5 min on one thread, cached) and says whether it reproduced the shipped weights.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${DEMO_OUT:-demo_out}
SAMPLES=${DEMO_SEARCH_SAMPLES:-50}
WORLD=${DEMO_WORLD:-generalists}
export HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # on a busy 2-core machine one torch thread is several times faster
start=$(date +%s)

tasks=$("$BIN/python" -c "from adamms_eval.task_folders import default_tasks_dir; print(default_tasks_dir())")
if [ "${DEMO_TRAIN:-0}" = 1 ]; then
  echo "== adamms zoo build --world $WORLD (cached after the first run)"
  zoo=$("$BIN/python" -c "from adamms_eval.zoo.build import default_zoo_dir; print(default_zoo_dir('full', 0, '$WORLD'))")
  "$BIN/adamms" zoo build --world "$WORLD"
else
  zoo=$("$BIN/python" -c "from adamms_eval.zoo.shipped import shipped_dir; print(shipped_dir('$WORLD'))")
  echo "== the shipped $WORLD zoo: $zoo"
fi
"$BIN/adamms" zoo tasks --out "$tasks" > /dev/null
TASKS=$("$BIN/python" -c "from adamms_eval.zoo.world import get_world; print(get_world('$WORLD').group)")
rm -rf "$OUT/lmms_eval"

run() {  # run NAME lmms-eval-args...: one lmms-eval run into $OUT/lmms_eval/NAME, quiet unless it fails
  local name=$1; shift
  echo "== lmms-eval $name"
  if ! "$BIN/lmms-eval" "$@" --tasks "$TASKS" --include_path "$tasks" --output_path "$OUT/lmms_eval/$name" \
        > "$OUT/$name.log" 2>&1; then
    tail -n 30 "$OUT/$name.log" >&2; echo "demo FAILED: lmms-eval $name (log: $OUT/$name.log)" >&2; exit 1
  fi
}
mkdir -p "$OUT"
run model_a --model qwen2_vl --model_args "pretrained=$zoo/model_a,device_map=cpu,device=cpu"
run model_b --model llava_hf --model_args "pretrained=$zoo/model_b,device_map=cpu,device=cpu"
run merged --model adamms --model_args \
  "base=$zoo/model_a,other=$zoo/model_b,alpha=auto,search_samples=$SAMPLES,search_report=full,cache_dir=$OUT/cache"

# lmms-eval exits 0 even when evaluation fails: the results and search files are the real signal
"$BIN/python" - "$OUT/lmms_eval" "$(( $(date +%s) - start ))" <<'PY'
import glob, json, os, sys
root, seconds = sys.argv[1], sys.argv[2]
def results(name):
    files = sorted(glob.glob(f"{root}/{name}/**/*_results.json", recursive=True))
    if not files:
        sys.exit(f"demo FAILED: lmms-eval {name} wrote no results (see demo_out/{name}.log)")
    return json.load(open(files[-1]))["results"]
a, b, m = results("model_a"), results("model_b"), results("merged")
records = glob.glob(f"{root}/merged/**/adamms_search.json", recursive=True)
if not records:
    sys.exit("demo FAILED: no adamms_search.json")
rec = json.load(open(records[0]))["tasks"]
score = lambda r, t: 100 * r[t]["exact_match,none"]
print(f"\n{'task':20} {'chosen α':>8} {'model A':>8} {'model B':>8} {'merged':>8}   (exact match, 0-100)")
for t in sorted(m):
    if t not in rec:
        continue
    print(f"{t:20} {rec[t]['alpha']:>8g} {score(a, t):>8.1f} {score(b, t):>8.1f} {score(m, t):>8.1f}")
print(f"\nsearch record and plots (D and the subset score against α): {os.path.dirname(records[0])}")
print(f"demo took {seconds} s")
PY
