#!/usr/bin/env python3
"""Where a training step's time goes: `perf script` samples of a
`charlstm bench` run, those inside the training step only (a frame
`Task>::step`; validation, sampling and start-up left out), grouped by
what they do (the products by where they are called from).

    taskset -c 1 perf record -o step.data -e cpu-clock -F 400 \
        --call-graph dwarf,65000 charlstm bench --recipe large --threads 1 \
        --steps 30 --data ../shared/datasets/wikitext2-valid/text8.zip
    perf script -i step.data | python3 xtask/bench/step_profile.py

Samples whose stack perf could not unwind to the step are not counted
(the first line says how many were).
"""
import collections
import re
import sys

STEP = "Task>::step"

# the AMX products are inline assembly inlined into the 16-bit products'
# entry points, which are their leaves
PRODUCT_LEAVES = ("rows_in_fours", "gemm_avx512", "gemm_avx2", "microkernel", "LocalKey", "gemm_basic",
                  "matmul_raw", "gemm_f16", "flush_f16", "gemm_bf16", "amx", "PackedHalf::matmul", "half::matmul_at",
                  "TransposedOperands::rows_into")
# operands rounded to 16 bits and laid out in pairs
HALF_PACKING = ("interleave_bf16", "interleave_f16", "convert_bf16", "convert_f16", "rows_to_pairs",
                "pairs_of_rows", "transpose_pairs", "pad_rows", "TransposedOperands::new")
PRODUCT_SITES = (
    ("linear_xent", "products: the classifier and its gradients"),
    ("backward_packed", "products: LSTM backward (dh, the weight gradients)"),
    ("forward_packed", "products: LSTM forward (the recurrent product)"),
    ("linear::linear_forward", "products: a dense input's projection"),
    ("linear::linear_backward", "products: a dense input's gradients"),
)
ALLOCATION = ("malloc", "_int_", "cfree", "consolidate", "memset", "memmove", "memcpy",
              "copy_2d", "rust_alloc", "from_iter", "page", "clear_page")
BOOKKEEPING = ("hashbrown", "burn_autodiff", "GraphLocator", "drop_in_place", "burn_flex",
               "burn_tensor", "burn_backend", "burn_dispatch", "hash_one")


def symbol(line):
    parts = line.split(None, 1)
    s = parts[1] if len(parts) > 1 else line
    return re.sub(r"\+0x[0-9a-f]+ .*$", "", s)


def category(leaf, frames):
    stack = " ".join(frames)
    if any(k in leaf for k in PRODUCT_LEAVES):
        for key, name in PRODUCT_SITES:
            if key in stack:
                return name
        return "products: elsewhere"
    if "pack_" in leaf or "vectorize" in leaf or any(k in leaf for k in HALF_PACKING):
        return "packing operands (the gemm crate's, ours)"
    if "cell_forward" in leaf or "cell_step" in leaf or "forward_packed" in leaf:
        return "cell step, forward"
    if "backward_packed" in leaf:
        return "cell step, backward"
    if "linear_xent" in leaf or "log_fma" in leaf or "exp_fma" in leaf:
        return "classifier: softmax and loss"
    if any(k in leaf for k in ALLOCATION):
        return "allocation, copies, zeroing, page faults"
    if any(k in leaf for k in BOOKKEEPING):
        return "Burn's autodiff graph and tensor bookkeeping"
    if "optim" in leaf or "sum_squares" in leaf:
        return "optimiser and gradient clipping"
    return "other"


def main():
    counts = collections.Counter()
    total = in_step = 0
    for sample in sys.stdin.read().split("\n\n"):
        lines = [l.strip() for l in sample.strip().split("\n")[1:] if l.strip()]
        if not lines:
            continue
        total += 1
        if not any(STEP in l for l in lines):
            continue
        in_step += 1
        frames = [symbol(l) for l in lines]
        leaf = next((f for f, l in zip(frames, lines) if "(inlined)" not in l), frames[0])
        counts[category(leaf, frames)] += 1
    if not in_step:
        sys.exit("no sample inside a training step: was perf recorded with --call-graph dwarf?")
    print(f"{in_step} of {total} samples inside the training step")
    for name, n in counts.most_common():
        print(f"{100 * n / in_step:5.1f}%  {name}")


if __name__ == "__main__":
    main()
