#!/usr/bin/env bash
# Compiles the CUDA sources (csrc/*/*_cuda.cu) for sm_90 on a machine without a GPU:
# a separate venv holds the CUDA build of torch (torch==2.14.1, CUDA 13, from the
# machines' local package cache) and nvcc 13 does the rest. Fails if any source does not
# compile or the library lacks the CUDA kernels. Nothing runs on a GPU here.
#   .ci/compile_cuda.sh            # from anywhere; about 10 minutes on 2 idle cores
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CUDA_VENV:-.cuda-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.14.1 setuptools wheel ninja
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export METADIP_STRICT_EXT=1 MAX_JOBS=${MAX_JOBS:-2}
"$VENV/bin/python" setup.py -q build_ext --build-temp "$BUILD/temp" --build-lib "$BUILD/lib"
SO=$(ls "$BUILD"/lib/metadip/_C_cuda*.so)
ls "$BUILD"/lib/metadip/_C.*.so > /dev/null  # the C++-only extension is built beside it
# The symbol table goes to a file first: `nm | grep -q` under pipefail fails with SIGPIPE
# whenever grep matches before nm has written everything.
nm -C --defined-only "$SO" > "$BUILD/symbols"
for sym in tv_fwd_cuda cm_lin_cuda ff_fwd_cuda; do
  grep -q "$sym(" "$BUILD/symbols" || { echo "compile_cuda: $SO lacks $sym"; exit 1; }
done
echo "compile_cuda: CUDA extension built for sm_${TORCH_CUDA_ARCH_LIST/./} ($(du -h "$SO" | cut -f1))"
