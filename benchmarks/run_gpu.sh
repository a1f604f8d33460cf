#!/usr/bin/env bash
# Validate and measure every GPU path: build the extension for the card, run the whole test
# suite on CUDA (gpu marker included; in parallel when pytest-xdist is there), then the
# kernel, inner-step, reconstruction and meta-memory benchmarks. Each step has its own time
# limit and a failing step does not stop the others.
#
#   OUT=/some/dir bash benchmarks/run_gpu.sh        # on the GPU machine, repo root
#
# A 15-minute lease holds one full call (step times measured on an H100):
#   1. no STEPS: build, tests, graph-check, reconstruct-large (380 s of step limits; 233 s
#      measured for the first three with the extension: build 110, tests 97, graph check
#      26), then benchmarks/train_gpu.sh in
#      the same call for what is left of it: benchmarks/lease_gpu.sh runs both and packs
#      what comes back (a machine left idle goes back within a minute, taking the run's
#      checkpoint with it);
#   2. when csrc/ or kernels/ changed, or in a later lease:
#      STEPS="build kernels inner reconstruct-w32 reconstruct-w128 meta-memory" over two
#      calls (the build only checks the extension when the machine is still warm).
# The call carries only tracked files: benchmarks/gpu_tree.sh slims the tree under the
# tool's 64 MiB (and restores it after).
# Needs torch (CUDA), triton, pytest, pytest-benchmark, scikit-image, safetensors, tqdm,
# pillow: the lent GPU machines have them and no internet, so nothing is downloaded.
# bm3d is optional (its tests skip without it). Results land in $OUT:
#   env.txt         devices, versions, commit, date, and each step's exit status
#   tests.log       pytest output (CUDA tests included)
#   kernels.json    TV / Fourier / complex-measurement backends vs torch (GB/s, copy bw)
#   inner.json      one fitting step, ratio to the compute floor
#   reconstruct-w32-<task>.json, reconstruct-w128-<task>.json
#                   50-step reconstructions: eager vs graph vs batched (B = 1..128), one
#                   file per task so a step cut at its limit keeps the tasks before it
#   meta_memory.json  peak memory of one meta-gradient vs the horizon (width 128, 128²)
#   reconstruct-large-denoise.json  the same for init="large" (width 128), B = 1, 8
#   gpu_layout.json   channels-last grouped networks vs NCHW, paired, B = 1, 32, 128
# Copy them to benchmarks/results/gpu/<date>-<device>/ and commit them.
set -u
OUT=${OUT:-benchmarks/results/gpu/latest}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ENV="$OUT/env.txt"
PY=${PYTHON:-python3}

# STEPS="build tests ..." runs the named steps; a name also selects its "-<task>" steps
# (reconstruct-w128 runs reconstruct-w128-denoise, -cs and -pr). Unset: call 1's steps.
STEPS=${STEPS:-build tests graph-check reconstruct-large}
step() {  # step NAME SECONDS COMMAND...: run with a time limit, record the exit status
  local name=$1 limit=$2 want chosen=""
  shift 2
  for want in $STEPS; do
    [[ $name == "$want" || $name == "$want"-* ]] && chosen=1
  done
  [ -n "$chosen" ] || return 0
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
step build 150 $PY -m pip install -q --no-build-isolation --no-deps --no-index -e . > "$OUT/tests.log" 2>&1
$PY -c "import metadip.dispatch as d; print('backends', d.available('cuda'), d.available('cpu'))" >> "$ENV" 2>&1

# The CPU half of the suite dominates its time: spread it over the cores when xdist is there.
# -v names each test as it ends, so a run cut at its limit still says what failed.
# 96 s without the C++ extension on an H100 (16 cores), 97 s with it.
XDIST=()
$PY -c "import xdist" 2> /dev/null && XDIST=(-n 14)
OMP_NUM_THREADS=1 step tests 130 $PY -m pytest -p no:cacheprovider -o addopts="" -v -ra "${XDIST[@]}" \
  tests >> "$OUT/tests.log" 2>&1

# CUDA graph replay against eager, per backend, with the run-to-run spread beside it.
step graph-check 40 $PY -m benchmarks.graph_check >> "$OUT/tests.log" 2>&1

# Channels-last grouped networks against NCHW, paired (benchmarks/gpu_layout_ab.py): no
# gain on an H100 (1.00x at B = 1, 0.97x at B = 32; results/gpu/2026-11-27-h100-3/).
step gpu-layout 90 $PY benchmarks/gpu_layout_ab.py --batches 1,32,128 > "$OUT/gpu_layout.json" \
  2>> "$OUT/tests.log"

# A quarter second per case is plenty for GPU kernels and keeps the kernel grid in budget.
BENCH="$PY -m pytest -q -p no:cacheprovider -o addopts= --benchmark-disable-gc \
  --benchmark-max-time=0.25 --benchmark-min-rounds=5"
step kernels 35 $BENCH benchmarks/bench_tv.py benchmarks/bench_fourier.py benchmarks/bench_cmeasure.py \
  -k cuda --benchmark-json="$OUT/kernels.json" >> "$OUT/tests.log" 2>&1
step inner 20 $BENCH benchmarks/bench_inner.py -k cuda --benchmark-json="$OUT/inner.json" \
  >> "$OUT/tests.log" 2>&1
export METADIP_BENCH_BATCHES=1,8,32,128
# The vmap rows (the alternative the grouped path was chosen over) are CPU-only here.
# Measured: CS 68–72 s, denoise 92 s (H100, H200); PR 85 s before its TV start, past 100 s
# with it (H200).
for spec in denoise:110 cs:80 pr:130; do
  task=${spec%%:*}
  step reconstruct-w32-$task ${spec##*:} $BENCH benchmarks/bench_reconstruct.py \
    -k "cuda and not vmap and $task" --benchmark-json="$OUT/reconstruct-w32-$task.json" \
    >> "$OUT/tests.log" 2>&1
done
# The shipped width-128 denoiser (init="large"), B = 1 and 8: a default step until it has
# a result (its GPU time is what the README's "meant for a GPU" rests on).
METADIP_BENCH_INIT=large METADIP_BENCH_BATCHES=1,8 step reconstruct-large 60 $BENCH \
  benchmarks/bench_reconstruct.py -k "cuda and not vmap and denoise" \
  --benchmark-json="$OUT/reconstruct-large-denoise.json" >> "$OUT/tests.log" 2>&1
# Width 128 costs ~16x width 32 per problem: B = 1 and 8 only.
for task in denoise cs pr; do
  METADIP_BENCH_INIT=random METADIP_BENCH_BATCHES=1,8 step reconstruct-w128-$task 40 $BENCH \
    benchmarks/bench_reconstruct.py -k "cuda and not vmap and $task" \
    --benchmark-json="$OUT/reconstruct-w128-$task.json" >> "$OUT/tests.log" 2>&1
done
# One process per point; each prints its row as it ends, so a cut run keeps them in tests.log.
step meta-memory 120 $PY benchmarks/bench_meta_memory.py --device cuda --size 128 --width 128 \
  --depth 5 --steps-list 10,100,1000 --max-unrolled 100 --fixed-segment 0 --repeats 1 \
  --timeout 100 --tag _gpu \
  >> "$OUT/tests.log" 2>&1
cp benchmarks/results/meta_memory_cuda_gpu.json "$OUT/meta_memory.json" 2>/dev/null || true
tail -n 12 "$ENV"
