# Sourced by classification_finetune.sh and classification_scratch.sh: one run of a study.
#   study_run RUN SEED VIEWS DEST EVAL_ARGS -- TRAIN_ARGS...
# trains $RUNS/RUN (resuming a killed run; skipped when finished), evaluates its test views
# with `sppnet eval-cls --views VIEWS EVAL_ARGS`, and copies the small files to DEST.
study_run() {
  local run=$1 seed=$2 views=$3 dest=$4 eval_args=$5
  shift 6  # ... and the "--"
  local out=$RUNS/$run
  if [ -f "$out/results.json" ]; then
    echo "== $run: done already"
  else
    echo "== $run: training ($(date +%T))"
    local resume=()
    [ -f "$out/last.safetensors" ] && resume=(--resume)
    "$PY" -m sppnet train-cls --seed "$seed" --output-dir "$out" "$@" "${resume[@]}"
  fi
  if [ ! -f "$out/views_test.json" ]; then
    echo "== $run: test views $views ($(date +%T))"
    # shellcheck disable=SC2086
    "$PY" -m sppnet eval-cls --run "$out" --views "$views" $eval_args --no-progress
  fi
  mkdir -p "$dest"
  cp "$out"/{config.json,metrics.jsonl,results.json,views_test.json,curves.png,dataset.json} \
    "$dest"/
  echo "== $run: copied to $dest ($(date +%T))"
}
