#!/usr/bin/env bash
# Every GPU check of the training core in one run, for a machine with an NVIDIA GPU (e.g. the
# device tool's H200); every number lands in $OUT:
#
#   OUT=/tmp/gpu bash benchmarks/gpu_checks.sh
#
# 1. the CUDA tests; 2. bench_step.py --device cuda (ms/step against the floors, its CUDA
# section: eager and CUDA graphs); 3. pgtm train at B = 64 ... 1024, T = 15 for the VRNN and
# Introspective GTMs: training frames/s from log.csv (the goal: >= 100,000 at B = 512);
# 4. a 2-rank data-parallel run (--nproc-per-node 2) if the machine has 2 GPUs (NCCL refuses
# two ranks on one GPU). A failing check is logged and the others still run.
set -uo pipefail
out=${OUT:?set OUT to a folder}
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null \
  || pip install -q ".[test]" > "$out/install.log" 2>&1

python -m pytest -q tests -k "cuda or CUDA" > "$out/cuda_tests.txt" 2>&1
python benchmarks/bench_step.py --device cuda --threads 1 --sections target,cuda \
  --out "$out/bench" > "$out/bench.log" 2>&1

train() {  # train MODEL BATCH [extra flags]
  python -m pgtm train perfect-recall --model "$1" --network mlp --device cuda \
    --batch-size "$2" --steps 200 --eval-every 1000000 --checkpoint-every 1000000 \
    --eval-sequences 8 --iwae-particles 2 --no-progress "${@:3}" \
    --out "$out/train/$1-b$2${3:+-ddp}" > "$out/train-$1-b$2${3:+-ddp}.log" 2>&1
}
for model in vrnn introspective; do
  for batch in 64 128 256 512 1024; do train "$model" "$batch"; done
done
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
[ "$gpus" -ge 2 ] && train introspective 512 --nproc-per-node 2

python - "$out" <<'EOF' > "$out/train_frames_per_second.md"
import csv, sys
from pathlib import Path
print("| run | steps | training seconds | frames/s |\n|---|---:|---:|---:|")
for log in sorted(Path(sys.argv[1], "train").glob("*/log.csv")):
    row = list(csv.DictReader(open(log)))[-1]
    batch = int(log.parent.name.split("-b")[1].split("-")[0])
    frames = int(row["step"]) * batch * 15
    print(f"| {log.parent.name} | {row['step']} | {float(row['seconds']):.1f} | "
          f"{frames / float(row['seconds']):,.0f} |")
EOF
cat "$out/train_frames_per_second.md"
