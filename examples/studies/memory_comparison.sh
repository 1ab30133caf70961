#!/usr/bin/env bash
# The content-addressed-memory comparison of docs/results/content_addressed_memories.md: models on dynamic dependency and
# similarity-cued recall at the same budget, one training process per core.
#   [MODELS="vrnn dnc"] [JOBS=2] [DEVICE=cpu] \
#     bash examples/studies/memory_comparison.sh [DATA_DIR] [STEPS] [TASK ...]
# MODELS: the models to train (default all five); JOBS: training processes at a time (default 2,
# one per core); DEVICE: cpu or cuda. Writes results/<task>/ at the default 2,000 steps and
# results/<task>_<STEPS>/ at any other budget; re-running continues each model from its
# checkpoint there, and each finished model rewrites the folder's summary over every model in it.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_DIR=${1:-../shared/data}
STEPS=${2:-2000}
TASKS=("${@:3}")
[ ${#TASKS[@]} -gt 0 ] || TASKS=(dynamic-dependency similarity-cued)
read -r -a MODEL_LIST <<< "${MODELS:-vrnn introspective ntm lru dnc}"
SUFFIX=$([ "$STEPS" = 2000 ] || echo "_$STEPS")
jobs=()
for task in "${TASKS[@]}"; do
  for model in "${MODEL_LIST[@]}"; do
    jobs+=("$task $model")
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P "${JOBS:-2}" -L 1 bash -c '
  task=$0; model=$1; out=results/${task//-/_}'"$SUFFIX"'
  python examples/studies/compare_models.py "$task" --models "$model" --network mlp --steps '"$STEPS"' \
    --threads 1 --eval-every 500 --device '"${DEVICE:-cpu}"' --out "$out" \
    --data-dir '"$DATA_DIR"' > "/tmp/pgtm_${task}_${model}.log" 2>&1 \
    && echo "done: $task $model" || echo "FAILED: $task $model (see /tmp/pgtm_${task}_${model}.log)"'
