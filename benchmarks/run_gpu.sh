#!/usr/bin/env bash
# Validate and measure every GPU path in one command (about 9 minutes on one H100):
# build the extension for the card, run the whole test suite on CUDA (gpu marker
# included), then the kernel, inner-step, reconstruction and meta-memory benchmarks.
#
#   OUT=/some/dir bash benchmarks/run_gpu.sh        # on the GPU machine, repo root
#
# Needs torch (CUDA), triton, pytest, pytest-benchmark, scikit-image, safetensors, tqdm,
# pillow: the lent GPU machines have them and no internet, so nothing is downloaded.
# bm3d is optional (its tests skip without it). Every step has its own time limit and a
# failing step does not stop the others. Results, at most 8 files, land in $OUT:
#   env.txt         devices, versions, commit, date, and each step's exit status
#   tests.log       pytest output (CUDA tests included)
#   kernels.json    TV / Fourier / complex-measurement backends vs torch (GB/s, copy bw)
#   inner.json      one fitting step, ratio to the compute floor
#   reconstruct-w32.json, reconstruct-w128.json
#                   50-step reconstructions: eager vs graph vs batched (B = 1..128)
#   meta_memory.json  peak memory of one meta-gradient vs the horizon (width 128, 128²)
# Copy them to benchmarks/results/gpu/<date>-<device>/ and commit them.
set -u
OUT=${OUT:-benchmarks/results/gpu/latest}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ENV="$OUT/env.txt"
PY=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, record the exit status
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "step $name: exit $rc after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$ENV"
}

{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  $PY -c "import triton; print('triton', triton.__version__)" || true
  nvcc --version | tail -1 || true
} > "$ENV" 2>&1

# Build metadip._C for the card (sm_90 on Hopper) against the machine's torch.
ARCH=$($PY -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')" 2>/dev/null || echo 9.0)
export TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=${MAX_JOBS:-16}
step build 240 $PY -m pip install -q --no-build-isolation --no-deps --no-index -e . > "$OUT/tests.log" 2>&1
$PY -c "import metadip.dispatch as d; print('backends', d.available('cuda'), d.available('cpu'))" >> "$ENV" 2>&1

step tests 200 $PY -m pytest -q -p no:cacheprovider -o addopts="" tests >> "$OUT/tests.log" 2>&1

BENCH="$PY -m pytest -q -p no:cacheprovider -o addopts= --benchmark-disable-gc"
step kernels 60 $BENCH benchmarks/bench_tv.py benchmarks/bench_fourier.py benchmarks/bench_cmeasure.py \
  -k cuda --benchmark-json="$OUT/kernels.json" >> "$OUT/tests.log" 2>&1
step inner 30 $BENCH benchmarks/bench_inner.py -k cuda --benchmark-json="$OUT/inner.json" \
  >> "$OUT/tests.log" 2>&1
export METADIP_BENCH_BATCHES=1,8,32,128
step reconstruct-w32 75 $BENCH benchmarks/bench_reconstruct.py -k cuda \
  --benchmark-json="$OUT/reconstruct-w32.json" >> "$OUT/tests.log" 2>&1
METADIP_BENCH_INIT=random step reconstruct-w128 75 $BENCH benchmarks/bench_reconstruct.py -k cuda \
  --benchmark-json="$OUT/reconstruct-w128.json" >> "$OUT/tests.log" 2>&1
step meta-memory 120 $PY benchmarks/bench_meta_memory.py --device cuda --size 128 --width 128 \
  --depth 5 --steps-list 10,20,50,100,200,500,1000 --max-unrolled 50 --timeout 100 --tag _gpu \
  >> "$OUT/tests.log" 2>&1
cp benchmarks/results/meta_memory_cuda_gpu.json "$OUT/meta_memory.json" 2>/dev/null || true
tail -n 12 "$ENV"
