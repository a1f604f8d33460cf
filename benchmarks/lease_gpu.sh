#!/usr/bin/env bash
# One device call for a whole 15-minute lease: run_gpu.sh's default steps (build, tests,
# graph check, reconstruct-large), then train_gpu.sh for what is left of BUDGET seconds,
# with what comes back packed under the device tool's limits (at most 8 files, 16 MiB
# each): the small files in one tarball, the checkpoint parts and the init beside it.
#
#   bash benchmarks/gpu_tree.sh slim                  # here, before the call
#   python benchmarks/pack_gpu_data.py --mb N         # N: what slim says is left, less 2
#   device call, carrying .gpudata:  OUT=$OUT bash benchmarks/lease_gpu.sh
#   bash benchmarks/gpu_tree.sh restore               # here, after it
#
# Then unpack results.tgz into benchmarks/results/gpu/<date>-<device>/ and move tr/* into
# the training run's folder (the config's `out`) and commit both. Training goes in the
# same call because a machine left idle goes back within a minute, and with it the
# checkpoint the next call would resume from.
# A follow-up call (train_gpu.sh again, LIMIT well under the lease's time left) must go
# out at once: the warm machine goes back ~30 s after a call ends, and a fresh one resumes
# nothing.
set -u
BUDGET=${BUDGET:-555}  # seconds of command time: a 600 s call, less packing and margin
: "${OUT:?set OUT to the folder whose files come back}"
WORK=$(mktemp -d)
OUT="$WORK/rg" bash benchmarks/run_gpu.sh > "$WORK/run_gpu.out" 2>&1
LIMIT=$((BUDGET - SECONDS))
echo "training limit $LIMIT s" > "$WORK/lease.txt"
if [ "$LIMIT" -gt 60 ]; then
  LIMIT=$LIMIT OUT="$WORK/tr" bash benchmarks/train_gpu.sh > "$WORK/train_gpu.out" 2>&1
fi
mkdir -p "$OUT/tr"
mv "$WORK"/tr/checkpoint.pt.part-* "$WORK/tr/init.safetensors" "$OUT/tr/" 2> /dev/null
rm -f "$WORK/tr/best.safetensors"  # the run's best by its own validation: not committed
tar czf "$OUT/results.tgz" -C "$WORK" .
tail -n 12 "$WORK"/rg/env.txt 2> /dev/null
grep -E "passed|failed" "$WORK"/rg/tests.log 2> /dev/null | tail -n 2
tail -n 4 "$WORK/train_gpu.out" 2> /dev/null
ls -la "$OUT/tr"
