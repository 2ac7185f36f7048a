#!/usr/bin/env python
"""The `large` recipe of charlstm in PyTorch, for `cargo xtask bench`: a
128-wide character embedding, torch.nn.LSTM with 2 layers of 512 units, a
linear classifier, 64 cursors x 50 unrollings (the notebook's batch
generator), state carried and detached, Adam (lr 0.002), global gradient
norm clipped to 5. Times the training loop only and prints one JSON line.

usage: torch_large.py --data text8.zip [--steps 40] [--warmup 5] [--threads 1] [--device cpu|cuda]
"""
import argparse
import json
import time

import numpy as np
import torch

from text8_file import read_text8


def read_ids(path):
    raw = read_text8(path)
    b = np.frombuffer(raw, dtype=np.uint8)
    ids = np.where(b == 32, 0, b.astype(np.int64) - 96)
    return ids[: int(len(ids) * 0.9)]  # the standard split's training part


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ids = read_ids(a.data)
    batch, unroll, hidden, emb = 64, 50, 512, 128
    segment = len(ids) // batch
    cursor = np.arange(batch) * segment

    embed = torch.nn.Embedding(27, emb).to(dev)
    lstm = torch.nn.LSTM(emb, hidden, num_layers=2).to(dev)
    out = torch.nn.Linear(hidden, 27).to(dev)
    params = list(embed.parameters()) + list(lstm.parameters()) + list(out.parameters())
    opt = torch.optim.Adam(params, lr=0.002)
    state = None
    calls = 0
    t0 = None
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        pos = (cursor[None, :] + calls * unroll + np.arange(unroll + 1)[:, None]) % len(ids)
        calls += 1
        cols = torch.from_numpy(ids[pos]).to(dev)
        x, y = cols[:-1], cols[1:]
        h, state = lstm(embed(x), state)
        state = tuple(s.detach() for s in state)
        loss = torch.nn.functional.cross_entropy(out(h.reshape(-1, hidden)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "framework": "pytorch",
        "impl": "nn.LSTM",
        "variant": "large",
        "steps": a.steps,
        "train_seconds": round(seconds, 3),
        "chars_per_second": round(a.steps * batch * unroll / seconds, 1),
        "threads": a.threads,
        "device": a.device,
        "final_loss": round(loss.item(), 4),
        "torch_version": torch.__version__,
    }))


if __name__ == "__main__":
    main()
