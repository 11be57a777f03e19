#!/bin/bash
# Device call 1 (carry .gpu/a): keeps the model's first part and installs the wheels under /tmp,
# which lasts while the machine stays warm (about 30 s idle): make call 2 at once.
set -euo pipefail
mkdir -p /tmp/lmgc-gpu
cp .gpu/a/model.part .gpu/a/model.sha256 /tmp/lmgc-gpu/
python3 -c "import constriction, gguf" 2>/dev/null ||
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/a/whl/*.whl
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv || echo "no nvidia-smi"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
