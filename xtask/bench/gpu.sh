#!/usr/bin/env bash
# Speed on a real GPU (H100/H200 class): charlstm's wgpu backend next to
# its own flex backend (same binary, same corpus, on the GPU machine's CPU)
# and next to PyTorch on CUDA, for the notebook model, the `large` recipe
# and the mirror.
#
#   bash xtask/bench/gpu.sh [CORPUS]        (from the repository root)
#
# CORPUS defaults to the 1 MB corpus beside the project. CHARLSTM_BIN names
# a `charlstm` built with `--features wgpu` elsewhere (a GPU machine without
# a Rust toolchain); without it the script builds one. Needs a Vulkan
# driver for the GPU (NVIDIA's ships one). PyTorch is run when `python3 -c
# "import torch"` works and CUDA is available (the reference scripts in
# ../shared/reference are CPU-only, so `large` and the mirror are compared,
# through xtask/bench/torch_large.py and torch_mirror.py). Each measurement
# has a time limit (GPU_BENCH_LIMIT seconds, default 150) and a failed one
# prints a JSON line saying so, so one failure does not hide the rest.
# Prints the GPU (nvidia-smi) and the number of cores, then one JSON line
# per measurement: ours on flex (one thread, every core) and wgpu, PyTorch
# on CUDA and, for `large`, on every core. The results go into
# docs/PERFORMANCE.md with this command beside them.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
data="${1:-../shared/datasets/wikitext2-valid/text8.zip}"
limit="${GPU_BENCH_LIMIT:-150}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nproc

bin="${CHARLSTM_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release -p cli --features wgpu || exit 1
  bin=target/release/charlstm
fi

# measure WHAT COMMAND...: runs COMMAND under the time limit; a failure is a JSON line
measure() {
  local what="$1"
  shift
  # stdin closed: the loop below reads its recipes from it
  timeout -k 10 "$limit" "$@" </dev/null
  local rc=$?
  [ "$rc" -eq 0 ] || echo "{\"failed\": \"$what\", \"exit_code\": $rc, \"limit_s\": $limit}"
}

# recipe, then the steps (timed, warm-up) on the CPU and on the GPU: the
# CPU figures are one thread and every core of this machine
while read -r recipe cpu_steps cpu_warmup gpu_steps gpu_warmup; do
  for threads in 1 "$(nproc)"; do
    measure "$recipe flex $threads" "$bin" bench --recipe "$recipe" --data "$data" --device flex \
      --threads "$threads" --steps "$cpu_steps" --warmup "$cpu_warmup"
  done
  measure "$recipe wgpu" "$bin" bench --recipe "$recipe" --data "$data" --device wgpu \
    --steps "$gpu_steps" --warmup "$gpu_warmup"
done <<'EOF'
notebook-char 300 20 300 20
notebook-embed 300 20 300 20
large 20 3 100 10
mirror 30 5 60 10
EOF

if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  measure "pytorch large cuda" python3 xtask/bench/torch_large.py --data "$data" --device cuda --steps 100 --warmup 10
  measure "pytorch mirror cuda" python3 xtask/bench/torch_mirror.py --data "$data" --device cuda --steps 60 --warmup 10
  measure "pytorch large cpu" python3 xtask/bench/torch_large.py --data "$data" --threads "$(nproc)" --steps 20 --warmup 3
else
  echo '{"note": "PyTorch with CUDA not found: reference skipped"}'
fi
