#!/usr/bin/env bash
# CPU work on the GPU machine's 16 cores (Python 3.12, torch 2.11, onnxruntime CPU, no network),
# from the repo root, the evaluation sets carried (git-ignored):
#
#   run(command="OUT=$OUT PART=1 bash benchmarks/cpu_device_call.sh", carry=["data/long", "data/short"])
#   run(command="OUT=$OUT PART=2 bash benchmarks/cpu_device_call.sh", carry=["data/long", "data/short"])
#
# PART=1: benchmarks/parallel.py (encode(parallel=N) against one process, the scaling curve of
#         one-thread workers) and benchmarks/onnx_int8.py on the shipped model (torch vs ORT fp32 and
#         each int8 variant ONNX Runtime's quantisers give, cosine and tokens/s at 512/2048/8192).
# PART=2: nDCG@10 of the shipped model on the long and short sets through `jina-rag eval`, torch
#         fp32 vs ORT fp32 vs ORT int8 (`export-onnx --optimize [--quantize int8]`).
set -u
OUT=${OUT:-/tmp/cpu-device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD"
SHIPPED=jina_rag/models/jina-rag-small-en
step() {  # name, timeout, command...
  local name=$1 limit=$2; shift 2
  local began=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? in $(( $(date +%s) - began )) s" | tee -a "$OUT/summary.log"
}
{ lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-400
  python3 -c "import torch, onnxruntime as ort; print('torch', torch.__version__, 'onnxruntime', ort.__version__)"
} > "$OUT/device-$PART.log" 2>&1
if [ "$PART" = 1 ]; then
  step parallel 200 python3 benchmarks/parallel.py --workers 1,2,4,8,16 --texts 384 --out "$OUT/parallel.json"
  step onnx-int8 220 python3 benchmarks/onnx_int8.py --work /tmp/int8 --lengths 512,2048,8192 --out "$OUT/onnx-int8.json"
else
  step export-fp32 90 python3 -m jina_rag.cli export-onnx "$SHIPPED" /tmp/onnxwork/ort-fp32 --optimize
  step export-int8 90 python3 -m jina_rag.cli export-onnx "$SHIPPED" /tmp/onnxwork/ort-int8 --optimize --quantize int8
  for set in long short; do
    step "eval-$set-torch" 150 python3 -m jina_rag.cli eval "data/$set" --model "$SHIPPED" --device cpu --no-bm25 \
      --max-lengths 8192 --no-progress -o "$OUT/eval-$set-torch.json"
    for export in ort-fp32 ort-int8; do
      step "eval-$set-$export" 150 python3 -m jina_rag.cli eval "data/$set" --model "/tmp/onnxwork/$export" --backend onnx \
        --no-bm25 --max-lengths 8192 --no-progress -o "$OUT/eval-$set-$export.json"
    done
  done
fi
