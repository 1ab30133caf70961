#!/usr/bin/env bash
# Every GPU check of the training core in one run, for a machine with an NVIDIA GPU (e.g. the
# device tool's H100 or H200); every number lands in $OUT. The lent machines have PyTorch but
# neither Pyro nor this project, and reach no package registry, so first, here:
#
#   bash benchmarks/gpu_checks.sh --prepare   # wheels of pyro-ppl and pyro-api into .whl/
#
# then there, with .whl carried beside the checkout:
#
#   OUT=/tmp/gpu bash benchmarks/gpu_checks.sh
#
# 1. the CUDA tests; 2. bench_step.py --device cuda (ms/step against the floors, its CUDA
# section: eager and CUDA graphs); 3. pgtm train at B = 64 ... 1024, T = 15 for the VRNN and
# Introspective GTMs: training frames/s from log.csv (the goal: >= 100,000 at B = 512);
# 4. pgtm train --compile at B = 512 for both; 5. a 2-rank data-parallel run (--nproc-per-node
# 2) if the machine has 2 GPUs (NCCL refuses two ranks on one GPU). Frames/s are counted from
# the log's row at step 50 on, after compilation and warm-up. A failing check is logged and the others still run.
# DEVICE=cpu STEPS=3 BATCHES=32 runs the same script on a CPU in a minute, to check it.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --prepare ]; then
  set -e
  versions=$(python -c "from importlib.metadata import version as v
print(f'pyro-ppl=={v(\"pyro-ppl\")} pyro-api=={v(\"pyro-api\")}')")
  rm -rf .whl && mkdir .whl
  # pure-Python wheels: one download serves any Python 3 there
  python -m pip download -q --no-deps --only-binary=:all: -d .whl $versions
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  ls .whl
  exit 0
fi

out=${OUT:?set OUT to a folder}
device=${DEVICE:-cuda}
steps=${STEPS:-200}
batches=${BATCHES:-64 128 256 512 1024}
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1

# this checkout and, where the machine lacks Pyro, the carried wheels, into a private folder;
# python -P keeps the checkout's own pgtm/ folder (without pgtm.models) off the import path
site=$(mktemp -d)
if ! python -c "import pyro" 2>/dev/null; then
  ls .whl/*.whl > /dev/null 2>&1 \
    || { echo "Pyro is missing here: run 'bash benchmarks/gpu_checks.sh --prepare' where pip" \
              "works and carry .whl" | tee "$out/install.log"; exit 2; }
  python -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl \
    >> "$out/install.log" 2>&1
fi
python -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . \
  >> "$out/install.log" 2>&1 || { cat "$out/install.log"; exit 2; }
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
python -P -c "import pgtm.models, pyro, torch
print('pgtm', pgtm.__file__, 'pyro', pyro.__version__, 'torch', torch.__version__,
      'cuda', torch.cuda.is_available())" | tee "$out/versions.txt"

python -P -m pytest -q -p no:cacheprovider tests -k "cuda or CUDA" > "$out/cuda_tests.txt" 2>&1
bench_size=()
[ "$device" = cpu ] && bench_size=(--smoke)
python -P benchmarks/bench_step.py --device "$device" --threads 1 --sections target,cuda \
  "${bench_size[@]}" --out "$out/bench" > "$out/bench.log" 2>&1

train() {  # train MODEL BATCH [extra flags]
  python -P -m pgtm train perfect-recall --model "$1" --network mlp --device "$device" \
    --batch-size "$2" --steps "$steps" --eval-every 1000000 --checkpoint-every 1000000 \
    --eval-sequences 8 --iwae-particles 2 --log-every 10 --no-progress "${@:3}" \
    --out "$out/train/$1-b$2${3:+-${3#--}}" > "$out/train-$1-b$2${3:+-${3#--}}.log" 2>&1
}
for model in vrnn introspective; do
  for batch in $batches; do train "$model" "$batch"; done
done
for model in vrnn introspective; do train "$model" 512 --compile; done
gpus=$(python -P -c "import torch; print(torch.cuda.device_count())")
[ "$gpus" -ge 2 ] && train introspective 512 --nproc-per-node 2

python -P - "$out" <<'EOF' > "$out/train_frames_per_second.md"
import csv, sys
from pathlib import Path
print("| run | steps | training seconds | frames/s from step 50 |\n|---|---:|---:|---:|")
for log in sorted(Path(sys.argv[1], "train").glob("*/log.csv")):
    rows = list(csv.DictReader(open(log)))
    start = next((r for r in rows if int(r["step"]) >= 50), rows[0])
    row = rows[-1]
    batch = int(log.parent.name.split("-b")[1].split("-")[0])
    frames = (int(row["step"]) - int(start["step"])) * batch * 15
    seconds = float(row["seconds"]) - float(start["seconds"])
    rate = f"{frames / seconds:,.0f}" if seconds > 0 else "-"
    print(f"| {log.parent.name} | {row['step']} | {float(row['seconds']):.1f} | {rate} |")
EOF
cat "$out/train_frames_per_second.md"
rm -rf "$site"
