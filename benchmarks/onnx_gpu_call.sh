#!/usr/bin/env bash
# ONNX Runtime's CUDA provider on the GPU machine (Python 3.12, torch 2.11 with CUDA 13, no network).
#
# onnxruntime-gpu 1.31.1 (built for CUDA 13 and cuDNN 9, the libraries torch's wheels already put
# there) is one 256 MB wheel; a call carries 64 MiB with the checkout. So, here:
#
#   pip download onnxruntime-gpu==1.31.1 --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d /tmp/ortgpu
#   split -n 5 -d -a 1 /tmp/ortgpu/onnxruntime_gpu-*.whl /tmp/ortgpu/part.   # then part.N into .ort(N+1)/
#
# and, with the shipped model's model.safetensors moved out of the checkout (51 MB), five calls back
# to back (the machine stays warm 30 s between calls), each carrying one part:
#
#   mkdir -p /tmp/ortparts && cp .ortN/part.* /tmp/ortparts/
#
# then, with the model back, one call that runs this script: OUT=$OUT bash benchmarks/onnx_gpu_call.sh
set -u
OUT=${OUT:-/tmp/onnx-gpu-out}
mkdir -p "$OUT" /tmp/site
if [ ! -d /tmp/site/onnxruntime ]; then
  cat /tmp/ortparts/part.* > /tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    /tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl || exit 1
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="/tmp/site:$PWD"
# The BERT-uncased vocabulary the tests build checkpoints with (benchmarks/device_call.sh says why).
export JINA_RAG_VOCAB_DIR=/tmp/jina-vocab
timeout 60 python3 -m training.models jina_rag/models/jina-rag-small-en/tokenizer.json "$JINA_RAG_VOCAB_DIR" > /dev/null
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, onnxruntime as ort; print('torch', torch.__version__, 'onnxruntime', ort.__version__, ort.get_available_providers())"
} 2>&1 | tee "$OUT/device.log"
timeout 200 python3 -m pytest -m gpu -v -rfEs -p no:cacheprovider tests/test_onnx.py 2>&1 | tail -25 | tee "$OUT/pytest.log"
timeout "${BENCH_SECONDS:-330}" python3 benchmarks/onnx_gpu.py --work /tmp/onnx-gpu-work ${BENCH_ARGS:-} --out "$OUT/onnx_gpu.json" 2>&1 | tee "$OUT/bench.log" | tail -40
