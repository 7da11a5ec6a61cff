#!/usr/bin/env bash
# The default model v2 (jina-rag-small-en) in one GPU call of at most ~10 minutes, trained AND
# evaluated, from the repo root (or a copy of the code beside its data):
#
#   bash training/configs/archive/default-small-v2.sh    # data: python -m training.prepare_default (see training/RESULTS.md)
#
# Starts from the shipped v1 model (INIT) and runs, each under a timeout so the export and the
# evaluation always run on whatever the newest checkpoint is:
#   1. pairs (default-small-v2-pairs.yaml): title/heading/man-summary -> passage, <= 512 tokens;
#   2. mining with stage 1's model (python -m training.mine), then hard negatives (-hard.yaml);
#   3. long pairs (-long.yaml): a heading deep in a page -> the whole page, <= 8192 tokens;
#   4. export of the newest checkpoint as fp16 pieces into $OUT (python -m training.ship_default);
#   5. evaluation on the full long and short sets (benchmarks/default_model.py --full) at
#      512/2048/8192 tokens: the new model and INIT, then the earlier stages' models with the time
#      left (MiniLM and BM25 rows: benchmarks/RESULTS.md, measured on CPU).
# Bring the model home with `python -m training.ship_default install FILES_DIR`.
#
# Environment: DATA (default data/gpu-default-v2), EVAL_DATA (folder with long/ and short/ BEIR
# sets, .jsonl or .jsonl.gz; default data/eval), INIT (default jina_rag/models/jina-rag-small-en),
# RUNS (default runs/default-small-v2; an existing run folder is resumed), OUT (default $RUNS/out),
# PAIRS_SECONDS / MINE_SECONDS / HARD_SECONDS / LONG_SECONDS / EVAL_SECONDS / STAGES_EVAL_SECONDS (timeouts),
# DEFAULT_SMALL_TINY=1 (a few CPU steps on a small eval sample: checks the script end to end).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=true
DATA=${DATA:-data/gpu-default-v2}
EVAL_DATA=${EVAL_DATA:-data/eval}
INIT=${INIT:-jina_rag/models/jina-rag-small-en}
RUNS=${RUNS:-runs/default-small-v2}
OUT=${OUT:-$RUNS/out}
CONFIGS=$(dirname "$0")
DEVICE=cuda
START=$(date +%s)

pairs=(output_dir="$RUNS/pairs" model.init_from="$INIT"
       "data.train=[$DATA/pairs-train.jsonl.gz]" "data.eval=[$DATA/pairs-eval.jsonl.gz]")
hard=(output_dir="$RUNS/hard" model.init_from="$RUNS/pairs"
      "data.train=[$RUNS/hard-negatives.jsonl]" "data.eval=[$DATA/pairs-eval.jsonl.gz]")
long=(output_dir="$RUNS/long" model.init_from="$RUNS/hard"
      "data.train=[$DATA/long-train.jsonl.gz]" "data.eval=[$DATA/long-eval.jsonl.gz]")
mine=(--max-length 512 --skip-top 3 --num-negatives 3)
evaluate=(--full)
if [ "${DEFAULT_SMALL_TINY:-0}" = 1 ]; then
  DEVICE=cpu
  tiny=(train.device=cpu train.precision=fp32 train.log_every=1 train.checkpoint_every=2 train.eval_every=2
        optim.warmup_steps=1 train.steps=2 contrastive.eval_batch_size=16)
  pairs+=("${tiny[@]}" train.batch_size=4 contrastive.passage_max_length=64)
  hard+=("${tiny[@]}" train.batch_size=4 contrastive.passage_max_length=64)
  long+=("${tiny[@]}" train.batch_size=2 contrastive.passage_max_length=256 contrastive.chunk_size=1)
  mine=(--max-length 64 --skip-top 1 --num-negatives 3)
  evaluate=(--max-docs 12 --max-queries 4 --max-lengths 128,256)
fi

source "$(dirname "${BASH_SOURCE[0]}")/../stage.sh"
device_facts
ls -l "$DATA" "$EVAL_DATA"
mkdir -p "$RUNS" "$OUT"

stage pairs "${PAIRS_SECONDS:-110}" "$CONFIGS/default-small-v2-pairs.yaml" "${pairs[@]}"

t0=$(date +%s)
echo "== mine hard negatives with the stage-1 model"
timeout -k 10 "${MINE_SECONDS:-75}" python3 -m training.mine --model "$RUNS/pairs" --device "$DEVICE" --no-progress \
  --pairs "$DATA/pairs-train.jsonl.gz" --out "$RUNS/hard-negatives.jsonl" "${mine[@]}"
echo "== mine: exit $? after $(elapsed "$t0")s"
if [ -f "$RUNS/hard-negatives.jsonl" ]; then
  stage hard "${HARD_SECONDS:-95}" "$CONFIGS/default-small-v2-hard.yaml" "${hard[@]}"
else
  echo "== hard: no mined negatives; the long stage starts from stage 1"
  long+=(model.init_from="$RUNS/pairs")
fi
stage long "${LONG_SECONDS:-130}" "$CONFIGS/default-small-v2-long.yaml" "${long[@]}"

echo "== export to $OUT"
timeout 60 python3 -m training.ship_default export --run "$RUNS/long" --fallback "$RUNS/hard" --fallback "$RUNS/pairs" --out "$OUT"
echo "== export: exit $? (total $(elapsed "$START")s)"

echo "== evaluation (full sets unless tiny): every stage's newest checkpoint and INIT"
mkdir -p "$RUNS/models"
unpack_eval_data "$EVAL_DATA" "$RUNS/eval-data"
link() {  # name target: a folder whose name names the model's rows in the table
  [ -n "$2" ] && ln -sfn "$(realpath "$2")" "$RUNS/models/$1" && echo "$RUNS/models/$1"
}
final=$(link v2 "$(latest_of "$RUNS/long")")
[ -z "$final" ] && final=$(link v2 "$(latest_of "$RUNS/hard")")
[ -z "$final" ] && final=$(link v2 "$(latest_of "$RUNS/pairs")")
shipped=$(link v1-shipped "$INIT")
stages=($(link v2-after-hard "$(latest_of "$RUNS/hard")") $(link v2-after-pairs "$(latest_of "$RUNS/pairs")"))
# The new model against the shipped one first; the earlier stages' models with the time left.
for round in main stages; do
  if [ "$round" = main ]; then models=($final $shipped); seconds=${EVAL_SECONDS:-110}; name=default_model.json
  else models=("${stages[@]}"); seconds=${STAGES_EVAL_SECONDS:-45}; name=default_model-stages.json; fi
  [ "${#models[@]}" = 0 ] && continue
  t0=$(date +%s)
  timeout -k 10 "$seconds" python3 benchmarks/default_model.py --data "$RUNS/eval-data" --device "$DEVICE" \
    --compare none --no-bm25 --model "${models[@]}" --output "$OUT/$name" "${evaluate[@]}"
  echo "== evaluation ($round): exit $? after $(elapsed "$t0")s (total $(elapsed "$START")s)"
done
ls -l "$OUT"
echo "== total $(elapsed "$START")s"
