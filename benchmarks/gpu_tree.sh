#!/usr/bin/env bash
# Slims the tree a GPU call carries to what the GPU scripts need, and restores it.
#
#   bash benchmarks/gpu_tree.sh slim      # before the device calls
#   GPU_RUNS=educated_denoise_w48_gpu_cycle bash benchmarks/gpu_tree.sh slim   # one run's checkpoint
#   bash benchmarks/gpu_tree.sh restore   # right after them
#
# A device call carries the tracked files (and untracked ones git does not ignore), at most
# 64 MiB with what it carries besides (.gpudata: ~34 MiB of training photos). The committed
# training results are larger than that on their own, and no GPU script reads them: slim
# untracks benchmarks/results in the index only (the files stay on disk, and ignored
# through .git/info/exclude) except the inits the tests load, the GPU results, and the
# checkpoint parts and log of the GPU training runs, which train_gpu.sh resumes (their
# .safetensors and plots stay behind). restore resets the index to
# HEAD and drops the exclusions. Nothing is committed or deleted either way.
set -eu
cd "$(git rev-parse --show-toplevel)"
EXCLUDE=.git/info/exclude
BEGIN="# gpu_tree.sh: begin" END="# gpu_tree.sh: end"
# The `out` folders of the GPU training runs whose checkpoints travel; GPU_RUNS="…" names
# only the one a lease continues (the width-128 run's checkpoint alone is 25 MiB).
read -r -a RUNS <<< "${GPU_RUNS:-paper_gpu educated_denoise_gpu educated_denoise_w48_gpu educated_denoise_w48_gpu_cycle}"
KEEP=(benchmarks/results/gpu "${RUNS[@]/#/benchmarks/results/}")
# Of the recipe study's inits only those the tests load travel (each is ~0.45 MiB), and the
# files configs start from (`init_from`: a GPU run starts there, and a test loads each).
mapfile -t KEEP_INITS < <(
  {
    grep -rhoE "benchmarks/results/recipe_study/inits/[A-Za-z0-9_.-]+" tests
    sed -nE 's/^init_from = "([^"]+)"$/\1/p' configs/*.toml
  } | sort -u
)

drop_block() {
  [ -f "$EXCLUDE" ] && sed -i "/^$BEGIN\$/,/^$END\$/d" "$EXCLUDE"
  return 0
}

case "${1:-}" in
  slim)
    if ! git diff --cached --quiet; then
      echo "the index holds staged changes: commit or unstage them first" >&2
      exit 1
    fi
    mkdir -p .git/info
    drop_block
    {
      echo "$BEGIN"
      echo "/.gpudata/"
      echo "/benchmarks/results/*"
      echo "!/benchmarks/results/gpu/"
      for run in "${RUNS[@]}"; do
        echo "!/benchmarks/results/$run/"
        echo "/benchmarks/results/$run/*.safetensors"
        echo "/benchmarks/results/$run/*.png"
      done
      echo "$END"
    } >> "$EXCLUDE"
    git rm -r -q --cached benchmarks/results
    for path in "${KEEP[@]}"; do
      [ -e "$path" ] && git add "$path"
    done
    [ ${#KEEP_INITS[@]} -eq 0 ] || git add -f "${KEEP_INITS[@]}"
    bytes=$( (git ls-files -z; git ls-files -z --others --exclude-standard) \
      | xargs -0 stat -c %s 2> /dev/null | awk '{s += $1} END {print s}')
    echo "the tree is $((bytes / 1048576)) MiB: $((64 - bytes / 1048576)) MiB are left for the carry" \
      "(pack_gpu_data.py --mb takes the photos' share)"
    ;;
  restore)
    git reset -q
    drop_block
    git status --short | head
    ;;
  *)
    echo "usage: bash benchmarks/gpu_tree.sh slim|restore" >&2
    exit 2
    ;;
esac
