#!/usr/bin/env bash
# The content-addressed-memory comparison of the README: every model on dynamic dependency and
# similarity-cued recall at the same budget, two training processes at a time (one per core).
#   bash examples/memory_comparison.sh [DATA_DIR] [STEPS] [TASK ...]
# Writes results/<task>/ at the default 2,000 steps and results/<task>_<STEPS>/ at any other
# budget; re-running continues each model from its checkpoint there.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${1:-../shared/data}
STEPS=${2:-2000}
TASKS=("${@:3}")
[ ${#TASKS[@]} -gt 0 ] || TASKS=(dynamic-dependency similarity-cued)
SUFFIX=$([ "$STEPS" = 2000 ] || echo "_$STEPS")
jobs=()
for task in "${TASKS[@]}"; do
  for model in vrnn introspective ntm lru dnc; do
    jobs+=("$task $model")
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P 2 -L 1 bash -c '
  task=$0; model=$1; out=results/${task//-/_}'"$SUFFIX"'
  python examples/compare_models.py "$task" --models "$model" --network mlp --steps '"$STEPS"' \
    --threads 1 --eval-every 500 --out "$out" --data-dir '"$DATA_DIR"' > "/tmp/pgtm_${task}_${model}.log" 2>&1 \
    && echo "done: $task $model" || echo "FAILED: $task $model (see /tmp/pgtm_${task}_${model}.log)"'
