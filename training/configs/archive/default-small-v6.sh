#!/usr/bin/env bash
# The default model v6 attempt (issue 7) in one GPU call: the shipped v4 trained on by
# default-small-v6-distill.yaml once per query weight of WEIGHTS (or CONFIG once per value of KEY:
# v7 is CONFIG=$here/default-small-v7-distill.yaml KEY=distill.passage_choice_weight), each run scored by
# benchmarks/late_chunking.py on the long set (training/configs/default-small.sh does each run; the teacher's
# vectors are computed by the first run and kept for the others). A call returns at most 8 files,
# so only the run whose late chunking leads naive chunking by the most keeps its export in
# $OUT/qw-WEIGHT; every run keeps its late_chunking.md. Data, from the repo root:
#
#   python -m training.prepare_default --data data/built --out data/gpu-default-v6 --mlm-mb 0 --mlm-eval-docs 48 \
#       --pairs 0 --eval-pairs 0 --distill-mb 4 --heading-queries-mb 12 --init-int8 jina_rag/models/jina-rag-small-en
#   python benchmarks/late_chunking.py data/built/long --save-spans data/gpu-default-v6/long-spans.json
#   + data/gpu-default-v6/eval/long: the long set (corpus and queries gzipped)
#   OUT=$OUT DATA=.device/v6 bash training/configs/archive/default-small-v6.sh
#
# Environment: DATA, OUT, CONFIG (default default-small-v6-distill.yaml), KEY (default distill.query_weight),
# WEIGHTS (its values, default "0.3 1.0"), DISTILL_SECONDS (per run, default 170), and what
# training/configs/default-small.sh reads (DISTILL_OVERRIDES is added to each run's KEY=value).
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
DATA=${DATA:-data/gpu-default-v6}
OUT=${OUT:-runs/default-small-v6/out}
best="" best_lead=""
first=""
for weight in ${WEIGHTS:-0.3 1.0}; do
  runs=runs/default-small-v6/qw-$weight
  mkdir -p "$runs/teacher" "$OUT/qw-$weight"
  [ -n "$first" ] && cp -n "$first"/teacher/*.npz "$runs/teacher/"
  first=${first:-$runs}
  echo "=== ${KEY:-distill.query_weight}=$weight"
  DATA=$DATA RUNS=$runs OUT=$OUT/qw-$weight INIT=int8 CONFIG=${CONFIG:-$here/default-small-v6-distill.yaml} \
    EVAL_SECONDS=0 TEACHER_SECONDS=${TEACHER_SECONDS:-120} DISTILL_SECONDS=${DISTILL_SECONDS:-170} \
    LATE_SECONDS=${LATE_SECONDS:-100} DISTILL_OVERRIDES="${KEY:-distill.query_weight}=$weight ${DISTILL_OVERRIDES:-}" \
    bash "$here/../default-small.sh"
  lead=$(grep -m1 '^- late chunking − naive chunking:' "$OUT/qw-$weight/late_chunking.md" | awk '{print $7}')
  echo "=== ${KEY:-distill.query_weight}=$weight: late chunking − naive chunking ${lead:-(no result)}"
  lead=${lead:--9}  # a run without a result keeps its export only while no run has one
  if [ -z "$best" ] || awk -v a="$lead" -v b="$best_lead" 'BEGIN { exit !(a > b) }'; then
    [ -n "$best" ] && find "$OUT/qw-$best" -type f ! -name late_chunking.md -delete
    best=$weight best_lead=$lead
  else
    find "$OUT/qw-$weight" -type f ! -name late_chunking.md -delete
  fi
done
echo "=== kept: the export of ${KEY:-distill.query_weight}=${best:-none} (late − naive ${best_lead:-n/a})"
