#!/usr/bin/env bash
# A refactor's GPU check (issue #27): the GPU tests, and benchmarks/gpu.py on the code before and
# after, interleaved in one call on one GPU (so clocks and the machine are the same). Here:
#
#   rm -rf .old && mkdir .old && git archive <commit before> jina_rag benchmarks/gpu.py benchmarks/common.py ":!jina_rag/models" | tar -x -C .old
#   run(command="OUT=$OUT bash benchmarks/refactor_gpu_call.sh", carry=[".old"])   # .old/ is git-ignored
#
# Then benchmarks/parallel.py on the machine's 16 CPU cores when time is left (PARALLEL=1).
set -u
OUT=${OUT:-/tmp/refactor-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export JINA_RAG_VOCAB_DIR=/tmp/jina-vocab  # the BERT-uncased vocabulary the tests build checkpoints with
PYTHONPATH=$PWD timeout 60 python3 -m training.models jina_rag/models/jina-rag-small-en/tokenizer.json "$JINA_RAG_VOCAB_DIR" > /dev/null
step() {  # name, timeout, command...
  local name=$1 limit=$2; shift 2
  local began=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? in $(( $(date +%s) - began )) s" | tee -a "$OUT/summary.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/device.log" 2>&1
GPU_ARGS=(--shapes base --lengths 512,8192 --docs 500 --skip b,c,text,flex,flash,cutoff)
for round in 1 2; do
  step "gpu-before-$round" 100 env PYTHONPATH="$PWD/.old:$PWD" python3 .old/benchmarks/gpu.py "${GPU_ARGS[@]}"
  step "gpu-after-$round" 100 env PYTHONPATH="$PWD" python3 benchmarks/gpu.py "${GPU_ARGS[@]}"
done
# Every GPU-marked test of the suite: modules whose extras the machine lacks are skipped (issue #30, item 9).
step pytest-gpu 150 env PYTHONPATH="$PWD" python3 -m pytest -m gpu -q -rs -p no:cacheprovider
if [ "${PARALLEL:-0}" = 1 ]; then
  step parallel 150 env PYTHONPATH="$PWD" python3 benchmarks/parallel.py --workers 1,2,4,8,16 --texts 384 --out "$OUT/parallel.json"
fi
