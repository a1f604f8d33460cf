#!/usr/bin/env bash
# Validate and measure every GPU path in one command (at most 9.5 minutes of step limits, to fit
# a 15-minute lease with the machine's start): build the extension for the card, run the
# whole test suite on CUDA (gpu marker included; in parallel when pytest-xdist is there),
# then the kernel, inner-step, reconstruction and meta-memory benchmarks.
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

# STEPS="build tests ..." runs only the named steps (a rerun that fits what is left of a
# lease); unset, every step runs.
STEPS=${STEPS:-}
step() {  # step NAME SECONDS COMMAND...: run with a time limit, record the exit status
  local name=$1 limit=$2
  shift 2
  if [ -n "$STEPS" ] && [[ " $STEPS " != *" $name "* ]]; then
    return 0
  fi
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
step build 100 $PY -m pip install -q --no-build-isolation --no-deps --no-index -e . > "$OUT/tests.log" 2>&1
$PY -c "import metadip.dispatch as d; print('backends', d.available('cuda'), d.available('cpu'))" >> "$ENV" 2>&1

# The CPU half of the suite dominates its time: spread it over the cores when xdist is there.
# -v names each test as it ends, so a run cut at its limit still says what failed.
XDIST=()
$PY -c "import xdist" 2> /dev/null && XDIST=(-n 8)
OMP_NUM_THREADS=2 step tests 120 $PY -m pytest -p no:cacheprovider -o addopts="" -v -ra "${XDIST[@]}" \
  tests >> "$OUT/tests.log" 2>&1

# CUDA graph replay against eager, per backend, with the run-to-run spread beside it.
step graph-check 30 $PY -m benchmarks.graph_check >> "$OUT/tests.log" 2>&1

# A quarter second per case is plenty for GPU kernels and keeps the kernel grid in budget.
BENCH="$PY -m pytest -q -p no:cacheprovider -o addopts= --benchmark-disable-gc \
  --benchmark-max-time=0.25 --benchmark-min-rounds=5"
step kernels 70 $BENCH benchmarks/bench_tv.py benchmarks/bench_fourier.py benchmarks/bench_cmeasure.py \
  -k cuda --benchmark-json="$OUT/kernels.json" >> "$OUT/tests.log" 2>&1
step inner 20 $BENCH benchmarks/bench_inner.py -k cuda --benchmark-json="$OUT/inner.json" \
  >> "$OUT/tests.log" 2>&1
export METADIP_BENCH_BATCHES=1,8,32,128
# The vmap rows (the alternative the grouped path was chosen over) are CPU-only here.
step reconstruct-w32 120 $BENCH benchmarks/bench_reconstruct.py -k "cuda and not vmap" \
  --benchmark-json="$OUT/reconstruct-w32.json" >> "$OUT/tests.log" 2>&1
# Width 128 costs ~16x width 32 per problem: B = 1 and 8 only, to stay inside the lease.
METADIP_BENCH_INIT=random METADIP_BENCH_BATCHES=1,8 step reconstruct-w128 50 $BENCH benchmarks/bench_reconstruct.py -k "cuda and not vmap" \
  --benchmark-json="$OUT/reconstruct-w128.json" >> "$OUT/tests.log" 2>&1
# One process per point; each prints its row as it ends, so a cut run keeps them in tests.log.
step meta-memory 60 $PY benchmarks/bench_meta_memory.py --device cuda --size 128 --width 128 \
  --depth 5 --steps-list 10,100,1000 --max-unrolled 100 --fixed-segment 0 --repeats 1 \
  --timeout 50 --tag _gpu \
  >> "$OUT/tests.log" 2>&1
cp benchmarks/results/meta_memory_cuda_gpu.json "$OUT/meta_memory.json" 2>/dev/null || true
tail -n 12 "$ENV"
