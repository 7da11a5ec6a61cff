#!/usr/bin/env bash
# The default model (jina-rag-small-en) in one GPU call of at most ~9 minutes, from the repo root:
#
#   bash training/configs/archive/default-small-v1.sh          # carry: data/gpu-default (python -m training.prepare_default)
#
# The teacher (all-MiniLM-L6-v2, int8, in the carry) embeds the pairs (seconds on the GPU), then
# MLM from scratch (default-small-v1-mlm.yaml), then pairs + distillation (default-small-v1-pairs.yaml),
# each under a timeout so the export always runs (without teacher embeddings, pairs runs without
# distillation); the export writes the newest checkpoint as fp16 pieces (model.part-aa.. of
# <= 15 MiB) and model-files.tar.gz into $OUT. Bring them home with
# `python -m training.ship_default install FILES_DIR`.
#
# Environment: DATA (default data/gpu-default), RUNS (default runs/default-small; an existing run
# folder is resumed, so name a new one for a fresh run), OUT (default $RUNS/out), TEACHER_SECONDS /
# MLM_SECONDS / PAIRS_SECONDS (timeouts), MLM_STEPS / PAIRS_STEPS (override the configs' steps),
# DEFAULT_SMALL_TINY=1 (a tiny model and a few CPU steps: checks the whole script end to end).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=true
DATA=${DATA:-data/gpu-default}
RUNS=${RUNS:-runs/default-small}
OUT=${OUT:-$RUNS/out}
MLM_SECONDS=${MLM_SECONDS:-230}
PAIRS_SECONDS=${PAIRS_SECONDS:-190}
START=$(date +%s)

mlm=(output_dir="$RUNS/mlm" model.tokenizer="$DATA/tokenizer"
     "data.train=[$DATA/mlm-train.jsonl.gz]" "data.eval=[$DATA/mlm-eval.jsonl.gz]")
TEACHER=$RUNS/pairs-train.teacher.npz
pairs=(output_dir="$RUNS/pairs" model.init_from="$RUNS/mlm" "contrastive.teacher_embeddings=[$TEACHER]"
       "data.train=[$DATA/pairs-train.jsonl.gz]" "data.eval=[$DATA/pairs-eval.jsonl.gz]")
[ -n "${MLM_STEPS:-}" ] && mlm+=(train.steps="$MLM_STEPS")
[ -n "${PAIRS_STEPS:-}" ] && pairs+=(train.steps="$PAIRS_STEPS")
if [ "${DEFAULT_SMALL_TINY:-0}" = 1 ]; then
  tiny=(train.device=cpu train.precision=fp32 train.log_every=1 train.checkpoint_every=2 optim.warmup_steps=1)
  mlm+=("${tiny[@]}" train.steps=3 train.batch_size=2 model.attn_implementation=auto mlm.seq_len=64
        mlm.eval_lengths=[64,128] mlm.eval_sequences=2
        'model.architecture={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64}')
  pairs+=("${tiny[@]}" train.steps=3 train.batch_size=4 train.eval_every=3 contrastive.eval_batch_size=64
          contrastive.passage_max_length=64 contrastive.query_max_length=16)
fi

source "$(dirname "${BASH_SOURCE[0]}")/../stage.sh"
device_facts
ls -l "$DATA"

echo "== teacher embeddings of the pairs"
t0=$(date +%s)
mkdir -p "$RUNS"
timeout -k 10 "${TEACHER_SECONDS:-90}" python3 -m training.teacher embed --pairs "$DATA/pairs-train.jsonl.gz" \
  --model "$DATA/teacher" --out "$TEACHER" --no-progress
echo "== teacher: exit $? after $(( $(date +%s) - t0 ))s"
if [ ! -f "$TEACHER" ]; then
  echo "== teacher: no embeddings; the pairs stage runs without distillation"
  pairs+=("contrastive.teacher_embeddings=[]" contrastive.distill_weight=0)
fi

stage mlm "$MLM_SECONDS" training/configs/archive/default-small-v1-mlm.yaml "${mlm[@]}"
stage pairs "$PAIRS_SECONDS" training/configs/archive/default-small-v1-pairs.yaml "${pairs[@]}"

echo "== export to $OUT"
mkdir -p "$OUT"
timeout 120 python3 -m training.ship_default export --run "$RUNS/pairs" --fallback "$RUNS/mlm" --out "$OUT"
echo "== export: exit $?"
ls -l "$OUT"
echo "== total $(( $(date +%s) - START ))s"
