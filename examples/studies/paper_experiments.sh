#!/usr/bin/env bash
# The paper's experiments (Gemici et al. 2017, section 5), parameter-matched models.
#
#   bash examples/studies/paper_experiments.sh DATA_DIR STEPS SEED EXPERIMENT [MODEL ...] \
#       [-- PGTM_TRAIN_OPTION ...]
#
# EXPERIMENT: perfect-recall-l10, perfect-recall-l20, perfect-recall-l50, parity-l10,
# parity-l20, parity-l50, one-shot, dynamic-dependency, similarity-cued, navigation,
# rotating-room (RGB frames: discretised-logistic likelihood, convolutional networks, since
# MLP networks on 3x32x32 frames alone exceed the 1.86 M budget).
# MODEL: vrnn introspective ntm lru dnc (default: all five, one after the other), or vrnn-x:
# the VRNN with the previous frame fed to its controller (--frame-feedback; the paper's Fig. 1a).
# Every model has 1.86 M parameters (--parameter-budget 1860000, MLP networks), one thread
# (run one such command per core; THREADS=2 runs one on both cores, e.g. the rotating room,
# whose step is 1.7x faster on two threads). Runs go to runs/paper/EXPERIMENT/MODEL/seedSEED;
# rerunning the same command with a larger STEPS continues each run exactly from its
# checkpoint. A loss
# explosion rolls back to the last kept checkpoint at half the learning rate (at most 3 times;
# rollbacks.json in the run folder records them) instead of stopping the run.
# COMPILE=1 trains through the compiled objective (--compile: the same trace ELBO, its step
# 1.3-1.8x faster on a CPU after 1-2 minutes of compilation); a run keeps its folder either way.
# Options after "--" are added to every pgtm train command and make a variant: its runs go to
# runs/paper-variants/VARIANT/EXPERIMENT/MODEL/seedSEED, VARIANT the options joined by "-"
# without their dashes (e.g. "-- --min-scale 0.01": min-scale-0.01).
set -euo pipefail

data_dir=${1:?DATA_DIR}
steps=${2:?STEPS}
seed=${3:?SEED}
experiment=${4:?EXPERIMENT}
shift 4
models=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do models+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the "--"
options=("$@")
[ ${#models[@]} -gt 0 ] || models=(vrnn introspective ntm lru dnc)
root=runs/paper
if [ ${#options[@]} -gt 0 ]; then
  variant_name=$(printf '%s\n' "${options[@]}" | sed 's/^--//' | paste -sd- -)
  root=runs/paper-variants/$variant_name
fi

network=mlp
case "$experiment" in
  perfect-recall-l10) task=(perfect-recall -l 10 -k 5) ;;
  perfect-recall-l20) task=(perfect-recall -l 20 -k 5) ;;
  perfect-recall-l50) task=(perfect-recall -l 50 -k 5) ;;
  parity-l10) task=(parity -l 10 -k 5) ;;
  parity-l20) task=(parity -l 20 -k 5) ;;
  parity-l50) task=(parity -l 50 -k 5) ;;
  one-shot) task=(one-shot -l 20 -k 5) ;;
  dynamic-dependency) task=(dynamic-dependency -l 20 -k 5) ;;
  similarity-cued) task=(similarity-cued -l 20 -k 5) ;;
  navigation) task=(navigation) ;;
  rotating-room) task=(rotating-room --likelihood discretized-logistic); network=conv ;;
  *) echo "unknown experiment $experiment" >&2; exit 2 ;;
esac

for model in "${models[@]}"; do
  variant=()
  [ "$model" = vrnn-x ] && variant=(--frame-feedback)
  pgtm train "${task[@]}" --model "${model%-x}" "${variant[@]}" "${options[@]}" \
    --data-dir "$data_dir" \
    --parameter-budget 1860000 --network "$network" --steps "$steps" --seed "$seed" \
    --threads "${THREADS:-1}" $([ "${COMPILE:-0}" = 1 ] && echo --compile) \
    --batch-size 32 --learning-rate 1e-3 --eval-every 500 --checkpoint-every 500 \
    --log-every 50 --on-divergence rollback --no-progress \
    --out "$root/$experiment/$model/seed$seed"
done
