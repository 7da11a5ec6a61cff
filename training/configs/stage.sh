# Shared by the default-model GPU scripts (source it): the device's facts and one training stage
# under a timeout. A stage stopped by its timeout keeps its newest checkpoint, and the script goes on,
# so an export always runs. START (the script's start, seconds) is optional.

device_facts() {
  echo "== device"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
}

elapsed() { echo "$(( $(date +%s) - $1 ))"; }

latest_of() {  # run folder: its newest complete checkpoint, or nothing
  python3 -c "import sys; from training.checkpoint import latest_checkpoint; print(latest_checkpoint(sys.argv[1]) or '')" "$1"
}

stage() {  # name seconds config overrides...
  local name=$1 seconds=$2 config=$3; shift 3
  local t0=$(date +%s)
  echo "== $name (timeout ${seconds}s): python3 -m training $config $*"
  timeout -k 15 "$seconds" python3 -m training "$config" "$@" train.progress=false
  local rc=$?
  echo "== $name: exit $rc after $(elapsed "$t0")s${START:+ (total $(elapsed "$START")s)}"
  [ "$rc" = 124 ] && echo "== $name: stopped by the timeout; its newest checkpoint carries on"
  local metrics="$(grep -o 'output_dir=[^ ]*' <<<"$*" | head -1 | cut -d= -f2)/metrics.jsonl"
  [ -f "$metrics" ] && { echo "== $name: metrics (last 4 records)"; tail -n 4 "$metrics"; }
  return 0
}

unpack_eval_data() {  # from to: the long and short BEIR sets, their corpora and queries gunzipped where gzipped
  local from=$1 to=$2 set file
  for set in long short; do
    mkdir -p "$to/$set/qrels"
    for file in corpus queries; do
      if [ -f "$from/$set/$file.jsonl.gz" ]; then gunzip -c "$from/$set/$file.jsonl.gz" > "$to/$set/$file.jsonl"
      else cp "$from/$set/$file.jsonl" "$to/$set/"; fi
    done
    cp "$from/$set/qrels/"*.tsv "$to/$set/qrels/"
  done
}
