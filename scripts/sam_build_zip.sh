#!/usr/bin/env bash
# Build the zip part of the stack - FetchFunction and its FetchDepsLayer - with the SAM CLI.
# Needs no Docker: only `sam` (SAM=/path/to/sam to pick one), python3.12 on PATH (SAM checks the
# runtime's interpreter; PY=/path/to/python3.12 to pick one), PyPI for the layer's wheels, and the model folder from
# scripts/build_model.py (the layer carries its tokenizer.json). The image functions are built by
# `sam build` on a machine with Docker.
#
# After the build it checks what Lambda would load: the layer's size, that no heavy package
# (lancedb, pyarrow, numpy, onnxruntime) is in it, and that the handler imports with only the
# layer and the Lambda runtime's own packages (boto3, botocore, ... linked from RUNTIME_SITE).
#
# Usage: scripts/sam_build_zip.sh [extra `sam build` options]
set -euo pipefail
cd "$(dirname "$0")/.."

SAM=${SAM:-sam}
BUILD_DIR=${BUILD_DIR:-.aws-sam/build}
# The first python3.12 that runs: on PATH (a pyenv shim may name a version that is not selected), else a
# pyenv-installed 3.12, else the system's.
find_python312() {
  local candidate
  for candidate in "$(command -v python3.12 || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 \
    /usr/local/bin/python3.12 /usr/bin/python3.12; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' \
      2>/dev/null && { echo "$candidate"; return; }
  done
}
PY=${PY:-$(find_python312)}
RUNTIME_SITE=${RUNTIME_SITE:-$(.venv/bin/python -c 'import boto3, pathlib; print(pathlib.Path(boto3.__file__).parents[1])' 2>/dev/null || true)}
LIMIT_MB=250

[ -n "$PY" ] || { echo "no python3.12 found (PATH, pyenv, /usr): sam build needs it for runtime python3.12; set PY=/path/to/python3.12" >&2; exit 1; }
export PATH="$(dirname "$PY"):$PATH" SAM_CLI_TELEMETRY=0

start=$(date +%s)
"$SAM" build FetchFunction --build-dir "$BUILD_DIR" "$@"
echo "sam build: $(( $(date +%s) - start )) s"

layer="$BUILD_DIR/FetchDepsLayer"
function_dir="$BUILD_DIR/FetchFunction"
size_mb=$(du -sm "$layer" "$function_dir" | awk '{s += $1} END {print s}')
echo "unzipped function + layer: ${size_mb} MB (Lambda limit ${LIMIT_MB} MB)"
[ "$size_mb" -lt "$LIMIT_MB" ] || { echo "over the Lambda size limit" >&2; exit 1; }
for pkg in lancedb pyarrow numpy onnxruntime; do
  [ ! -e "$layer/python/$pkg" ] || { echo "heavy package in the fetch layer: $pkg" >&2; exit 1; }
done

# Import the handler as Lambda would: function code, then /opt/python, then the runtime's packages.
runtime=$(mktemp -d)
trap 'rm -rf "$runtime"' EXIT
if [ -n "$RUNTIME_SITE" ]; then
  for pkg in boto3 botocore s3transfer jmespath dateutil urllib3 six.py; do
    [ -e "$RUNTIME_SITE/$pkg" ] && ln -s "$RUNTIME_SITE/$pkg" "$runtime/$pkg"
  done
fi
STRATUS_MODEL_DIR="$layer/model" "$PY" -S - "$function_dir" "$layer/python" "$runtime" <<'PY'
import importlib
import sys
import time

sys.path[:0] = sys.argv[1:4]
start = time.perf_counter()
importlib.import_module("app")
seconds = time.perf_counter() - start
heavy = sorted({"lancedb", "pyarrow", "numpy", "onnxruntime", "tiktoken"} & set(sys.modules))
if heavy:
    sys.exit(f"importing the fetch handler loaded {heavy}: keep those imports lazy")
print(f"fetch handler imports in {seconds:.2f} s with only the layer and the runtime's packages")
PY
