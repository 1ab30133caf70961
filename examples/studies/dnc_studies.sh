#!/usr/bin/env bash
# The DNC-GTMM studies of docs/results/content_addressed_memories.md on dynamic dependency: two variants of the DNC trained side by
# side, one process per core, at the budget of the all-model comparison
# (results/dynamic_dependency_<STEPS>/, whose VRNN and default DNC rows they are compared with:
# run `bash examples/studies/memory_comparison.sh DATA_DIR STEPS dynamic-dependency` first).
#   bash examples/studies/dnc_studies.sh STUDY [DATA_DIR] [STEPS]
# STUDY is one of
#   read-init    sharp, content-addressed first reads (--dnc-read-strength-init 10
#                --dnc-content-mode-init 0.9), without and with a 2,000-step KL warm-up;
#                writes results/dnc_read_init/
#   time-stamps  time-stamped words (--dnc-time-stamp-size 16), alone and with the read init
#                and KL warm-up above; writes results/dnc_time_stamps/
# Each study writes one folder per variant and, over those and the baselines,
# summary.{json,md} and kl_per_step.png. Re-running continues each run from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
STUDY=${1:?usage: bash examples/studies/dnc_studies.sh read-init|time-stamps [DATA_DIR] [STEPS]}
DATA_DIR=${2:-../shared/data}
STEPS=${3:-16000}
BASELINE=results/dynamic_dependency_${STEPS}
read_init="--dnc-read-strength-init 10 --dnc-content-mode-init 0.9"
warm_up="--kl-anneal-steps 2000"
case "$STUDY" in
  read-init)
    OUT=results/dnc_read_init
    names=(content_init content_init_kl_warmup)
    labels=("dnc, content init" "dnc, content init + KL warm-up 2000")
    flags=("$read_init" "$read_init $warm_up")
    ;;
  time-stamps)
    OUT=results/dnc_time_stamps
    names=(time_stamps time_stamps_content_init_kl_warmup)
    labels=("dnc, time stamps" "dnc, time stamps + content init + KL warm-up 2000")
    flags=("--dnc-time-stamp-size 16" "--dnc-time-stamp-size 16 $read_init $warm_up")
    ;;
  *) echo "unknown study: $STUDY (read-init or time-stamps)" >&2; exit 2 ;;
esac
common=(dynamic-dependency --model dnc --network mlp --steps "$STEPS" --threads 1
        --eval-every 500 --checkpoint-every 500 --log-every 50 --eval-sequences 128
        --iwae-particles 100 --data-dir "$DATA_DIR" --no-progress)
for i in 0 1; do
  # shellcheck disable=SC2086  # the flags are words
  pgtm train "${common[@]}" ${flags[$i]} --out "$OUT/${names[$i]}" \
    > "/tmp/pgtm_dnc_${names[$i]}.log" 2>&1 &
done
wait
python - "$OUT" "$BASELINE" "${names[0]}" "${labels[0]}" "${names[1]}" "${labels[1]}" <<'PY'
import json
import sys
from pathlib import Path

from pgtm.experiment import write_summary

out, baseline = map(Path, sys.argv[1:3])
runs = {"vrnn": baseline / "vrnn", "dnc (default init)": baseline / "dnc"}
variants = sys.argv[3:]
for name, label in zip(variants[::2], variants[1::2], strict=True):
    runs[label] = out / name
summaries = {name: json.loads((run / "results.json").read_text()) for name, run in runs.items()}
write_summary(summaries, out, "dynamic-dependency")
print((out / "summary.md").read_text())
PY
