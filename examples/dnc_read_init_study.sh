#!/usr/bin/env bash
# The README's DNC read-initialisation study on dynamic dependency: the DNC-GTMM with sharp,
# content-addressed first reads (--dnc-read-strength-init 10 --dnc-content-mode-init 0.9),
# without and with a 2,000-step KL warm-up, one training process per core, at the budget of
# the all-model comparison (results/dynamic_dependency_<STEPS>/, whose VRNN and DNC rows it
# compares against: run `bash examples/memory_comparison.sh DATA_DIR STEPS dynamic-dependency`
# first).
#   bash examples/dnc_read_init_study.sh [DATA_DIR] [STEPS]
# Writes results/dnc_read_init/{content_init,content_init_kl_warmup}/ and, over those and the
# baseline VRNN and DNC, results/dnc_read_init/summary.{json,md} and kl_per_step.png.
# Re-running continues each run from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${1:-../shared/data}
STEPS=${2:-16000}
OUT=results/dnc_read_init
BASELINE=results/dynamic_dependency_${STEPS}
common=(dynamic-dependency --model dnc --network mlp --steps "$STEPS" --threads 1
        --eval-every 500 --checkpoint-every 500 --log-every 50 --eval-sequences 128
        --iwae-particles 100 --data-dir "$DATA_DIR" --no-progress
        --dnc-read-strength-init 10 --dnc-content-mode-init 0.9)
pgtm train "${common[@]}" --out "$OUT/content_init" > /tmp/pgtm_dnc_content_init.log 2>&1 &
pgtm train "${common[@]}" --kl-anneal-steps 2000 --out "$OUT/content_init_kl_warmup" \
  > /tmp/pgtm_dnc_content_init_kl_warmup.log 2>&1 &
wait
python - "$OUT" "$BASELINE" <<'EOF'
import json
import sys
from pathlib import Path

from pgtm.inference.experiment import write_summary

out, baseline = map(Path, sys.argv[1:])
runs = {
    "vrnn": baseline / "vrnn",
    "dnc (default init)": baseline / "dnc",
    "dnc, content init": out / "content_init",
    "dnc, content init + KL warm-up 2000": out / "content_init_kl_warmup",
}
summaries = {name: json.loads((run / "results.json").read_text()) for name, run in runs.items()}
write_summary(summaries, out, "dynamic-dependency")
print((out / "summary.md").read_text())
EOF
