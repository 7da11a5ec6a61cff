#!/usr/bin/env bash
# The current default model recipe, v4 (the shipped jina-rag-small-en), in one GPU call of under 10
# minutes: a student of all-MiniLM-L6-v2's shape built from the teacher's own weights
# (training/teacher_init.py), then distilled from the teacher (default-small-distill.yaml: each
# passage read in its document and alone, every query -> the teacher's vector, + 0.2 x InfoNCE
# against the batch's teacher vectors). From the repo root or a copy of the code beside its data:
#
#   python -m training.prepare_default --data data/built --out data/gpu-default-v3 --mlm-mb 0 --mlm-eval-docs 48 \
#       --pairs 0 --eval-pairs 0 --distill-mb 100 --init-int8 jina_rag/models/jina-rag-small-en   (training/README.md)
#   OUT=$OUT DATA=.device/v3 bash training/configs/default-small.sh
#
# The shipped v4 ran with EVAL_SECONDS=0 LATE_SECONDS=0 (on a fresh machine the evaluations need more
# time than a call has left; v4 was evaluated on the CPU afterwards, training/RESULTS.md). Archived
# recipes run through this script too: v3 with CONFIG=training/configs/archive/default-small-v3-distill.yaml
# INIT=int8 DISTILL_SECONDS=280 (the defaults until v4; v3b: ...-v3b-distill.yaml and v3's int8 copy as
# init-int8), v5 with CONFIG=training/configs/archive/default-small-v5-distill.yaml, v6/v7 by
# archive/default-small-v6.sh. training/configs/README.md lists them.
#
#   1. the starting model: built from the carried teacher (INIT=teacher), or from an int8 copy (INIT=int8);
#   2. the teacher's vectors of every passage of the training and eval rows (training.teacher embed-spans);
#   3. the distill stage, under a timeout (a stage stopped by it keeps its newest checkpoint);
#   4. export of the newest checkpoint as fp16 pieces into $OUT (python -m training.ship_default);
#   5. evaluation on the full long and short sets at 512/2048/8192 tokens (benchmarks/default_model.py),
#      then single vector vs naive vs late chunking on the long set (benchmarks/late_chunking.py, with
#      passages split here beforehand: LangChain is not on the GPU machine).
# Bring the model home with `python -m training.ship_default install FILES_DIR`.
#
# Environment: DATA (default data/gpu-default-v3: distill-*.jsonl.xz (all but distill-eval train), teacher/, init-int8/, eval/,
# long-spans.json), RUNS (default runs/default-small-v3; an existing run folder is resumed, its teacher vectors kept), OUT
# (default $RUNS/out), CONFIG (the distill config, default default-small-distill.yaml beside this script), INIT (default
# teacher: built from the teacher, training/teacher_init.py; int8: the model in $DATA/init-int8), TEACHER_SECONDS /
# DISTILL_SECONDS (default 380, as v4 ran) / EVAL_SECONDS / LATE_SECONDS (timeouts; EVAL_SECONDS=0 / LATE_SECONDS=0
# leave the evaluations out), DISTILL_OVERRIDES
# (more key=value overrides of the distill config, e.g. "train.log_every=10 distill.query_weight=0"),
# DEFAULT_SMALL_TINY=1 (a few CPU steps and a small eval sample: checks the script end to end).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=true
DATA=${DATA:-data/gpu-default-v3}
RUNS=${RUNS:-runs/default-small-v3}
OUT=${OUT:-$RUNS/out}
CONFIG=${CONFIG:-$(dirname "$0")/default-small-distill.yaml}
DEVICE=cuda
START=$(date +%s)

# Every distill-*.jsonl.xz of $DATA but the eval rows trains (v5: distill-queries.jsonl.xz too).
train_files=$(ls "$DATA"/distill-*.jsonl.xz | grep -v '/distill-eval\.jsonl\.xz$' | paste -sd, -)
distill=(output_dir="$RUNS/distill" model.init_from="$RUNS/init" "distill.teacher_targets=[$RUNS/teacher/*.npz]"
         "data.train=[$train_files]" "data.eval=[$DATA/distill-eval.jsonl.xz]")
evaluate=(--full)
late=()
if [ "${DEFAULT_SMALL_TINY:-0}" = 1 ]; then
  DEVICE=cpu
  distill+=(train.device=cpu train.precision=fp32 train.log_every=1 train.checkpoint_every=2 train.eval_every=2
            optim.warmup_steps=1 train.steps=2 train.batch_size=4 distill.max_length=512 distill.row_tokens=1024)
  evaluate=(--max-docs 12 --max-queries 4 --max-lengths 128,256)
  late=(--max-queries 4 --max-length 512)
fi

source "$(dirname "${BASH_SOURCE[0]}")/stage.sh"
device_facts
ls -l "$DATA"
mkdir -p "$RUNS/teacher" "$OUT"

if [ "${INIT:-teacher}" = teacher ]; then
  echo "== the starting model from the teacher's weights (training/teacher_init.py)"
  python3 -m training.teacher_init --teacher "$DATA/teacher" --out "$RUNS/init" || exit 1
else
  echo "== the starting model from its int8 copy"
  python3 -m training.int8 unpack "$DATA/init-int8" "$RUNS/init" || exit 1
fi

t0=$(date +%s)
for file in "$DATA"/distill-*.jsonl.xz; do
  split=$(basename "$file" .jsonl.xz); split=${split#distill-}
  if [ -s "$RUNS/teacher/$split.npz" ]; then echo "== teacher vectors of distill-$split: kept from $RUNS/teacher"; continue; fi
  echo "== teacher vectors of distill-$split"
  timeout -k 10 "${TEACHER_SECONDS:-75}" python3 -m training.teacher embed-spans --data "$file" \
    --model "$DATA/teacher" --out "$RUNS/teacher/$split.npz" --device "$DEVICE" --batch-size 512 --no-progress
done
echo "== teacher: exit $? after $(elapsed "$t0")s (total $(elapsed "$START")s)"

# shellcheck disable=SC2206  # DISTILL_OVERRIDES is a list of key=value overrides
distill+=(${DISTILL_OVERRIDES:-})
stage distill "${DISTILL_SECONDS:-380}" "$CONFIG" "${distill[@]}"
if [ -z "$(latest_of "$RUNS/distill")" ] && [ "$DEVICE" = cuda ]; then
  echo "== distill: no checkpoint with FlexAttention; again with blockwise attention"
  stage distill 120 "$CONFIG" "${distill[@]}" model.attn_implementation=blockwise
fi

echo "== export to $OUT"
timeout 60 python3 -m training.ship_default export --run "$RUNS/distill" --out "$OUT"
echo "== export: exit $? (total $(elapsed "$START")s)"

echo "== evaluation of the newest checkpoint"
unpack_eval_data "$DATA/eval" "$RUNS/eval-data"
mkdir -p "$RUNS/models"
ln -sfn "$(realpath "$(latest_of "$RUNS/distill")")" "$RUNS/models/v3"
t0=$(date +%s)
[ "${EVAL_SECONDS:-100}" != 0 ] && timeout -k 10 "${EVAL_SECONDS:-100}" python3 benchmarks/default_model.py --data "$RUNS/eval-data" --device "$DEVICE" \
  --compare none --no-bm25 --model "$RUNS/models/v3" --output "$OUT/default_model.json" "${evaluate[@]}"
echo "== evaluation: exit $? after $(elapsed "$t0")s (total $(elapsed "$START")s)"
t0=$(date +%s)
[ "${LATE_SECONDS:-90}" != 0 ] && timeout -k 10 "${LATE_SECONDS:-90}" python3 benchmarks/late_chunking.py "$RUNS/eval-data/long" --model "$RUNS/models/v3" \
  --device "$DEVICE" --spans "$DATA/long-spans.json" "${late[@]}" 2>&1 | tee "$OUT/late_chunking.md"
echo "== late chunking: exit $? after $(elapsed "$t0")s (total $(elapsed "$START")s)"
ls -l "$OUT"
echo "== total $(elapsed "$START")s"
