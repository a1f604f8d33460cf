#!/usr/bin/env bash
# Paper-size training on a lent GPU, in resumable chunks of at most ~9 minutes: the
# Educated-DIP denoiser at width 128 (configs/educated_denoise_gpu.toml). The paper-size
# MAML run (CONFIG=configs/train_paper_gpu.toml) took 152 s per outer step on an H100,
# about 5 steps a lease (benchmarks/results/gpu/2026-11-27-h100/).
#
#   OUT=/some/dir bash benchmarks/train_gpu.sh      # on the GPU machine, repo root
#
# Each call resumes the run in RUN (the config's `out`) when a checkpoint is there,
# trains until LIMIT seconds (SIGTERM: the trainer saves a checkpoint before it exits),
# and leaves in $OUT what must be committed to go on next time: the checkpoint split
# into parts under 16 MiB (checkpoint.pt.part-00, -01, ...), init.safetensors, log.jsonl
# best.safetensors and convergence.png when written. Commit them into RUN, then call
# again. The call carries the checkpoint and the photos: `bash benchmarks/gpu_tree.sh slim`
# says how many MiB are left for the photos (pack_gpu_data.py --mb).
# Without the C++ extension (METADIP_NO_EXT=1) the CUDA ops run as Triton kernels, so
# no build is needed on a fresh machine. The training photos must travel with the call:
# run benchmarks/pack_gpu_data.py here first and carry .gpudata.
set -u
CONFIG=${CONFIG:-configs/educated_denoise_gpu.toml}
LIMIT=${LIMIT:-510}
OUT=${OUT:-/tmp/train_gpu_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
METADIP_NO_EXT=1 $PY -m pip install -q --no-build-isolation --no-deps --no-index -e . \
  > "$OUT/train.log" 2>&1 || { echo "install failed"; tail "$OUT/train.log"; exit 1; }
RUN=$($PY -c "from metadip.train import TrainConfig; print(TrainConfig.from_toml('$CONFIG').out)")
mkdir -p "$RUN"
if ls "$RUN"/checkpoint.pt.part-* > /dev/null 2>&1; then
  cat "$RUN"/checkpoint.pt.part-* > "$RUN/checkpoint.pt"
fi
RESUME=""
[ -f "$RUN/checkpoint.pt" ] && RESUME=--resume
# The photos travel as .gpudata (benchmarks/pack_gpu_data.py): ../shared does not.
DATA=()
[ -d .gpudata ] && DATA=(--data .gpudata)
if ls .gpudata/*.webp > /dev/null 2>&1 \
  && ! $PY -c "from PIL import features; raise SystemExit(not features.check('webp'))"; then
  echo "this machine's Pillow cannot read WebP: pack the photos with --png" | tee -a "$OUT/train.log"
  exit 1
fi
timeout -s TERM "$LIMIT" $PY -m metadip.cli train --config "$CONFIG" $RESUME "${DATA[@]}" \
  --no-progress >> "$OUT/train.log" 2>&1
echo "trainer exit $?" >> "$OUT/train.log"
split -b 15M -d -a 2 "$RUN/checkpoint.pt" "$OUT/checkpoint.pt.part-" 2>/dev/null
for f in init.safetensors best.safetensors log.jsonl convergence.png; do
  [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"
done
tail -n 5 "$OUT/train.log"
tail -n 2 "$RUN/log.jsonl" 2>/dev/null
