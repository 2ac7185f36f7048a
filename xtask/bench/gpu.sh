#!/usr/bin/env bash
# Speed on a real GPU (H100/H200 class): charlstm's wgpu backend next to
# PyTorch on CUDA, for the notebook model and the `large` recipe.
#
#   bash xtask/bench/gpu.sh [CORPUS]        (from the repository root)
#
# CORPUS defaults to the 1 MB corpus beside the project. Needs a Vulkan
# driver for the GPU (NVIDIA's ships one). PyTorch is run when `python3 -c
# "import torch"` works and CUDA is available (the reference scripts in
# ../shared/reference are CPU-only, so only the `large` model is compared). Prints one JSON line per measurement; the results go
# into docs/PERFORMANCE.md with this command beside them.
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${1:-../shared/datasets/wikitext2-valid/text8.zip}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

cargo build --release -p cli --features wgpu
bin=target/release/charlstm

for recipe in notebook-char notebook-embed large; do
  # the CPU first (same binary, same corpus), then the GPU
  "$bin" bench --recipe "$recipe" --data "$data" --device flex --threads 1 --steps 300 --warmup 20
  "$bin" bench --recipe "$recipe" --data "$data" --device wgpu --steps 300 --warmup 20
done

if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  python3 xtask/bench/torch_large.py --data "$data" --device cuda --steps 300 --warmup 20
else
  echo '{"note": "PyTorch with CUDA not found: reference skipped"}'
fi
