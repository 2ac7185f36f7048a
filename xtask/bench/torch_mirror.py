#!/usr/bin/env python
"""The `mirror` recipe of charlstm in PyTorch, for `cargo xtask bench`: the
same encoder-decoder with located attention, trained the same way, so that
training speed can be compared side by side.

Model (crates/model/src/mirror, recipe crates/trainer/recipes/mirror.toml):
30 symbols (27 characters, padding, start, end), 32-wide source and target
embeddings, a bidirectional torch.nn.LSTM encoder of 128 units a direction
over the source with an end symbol appended, a 128-unit decoder LSTM
started from the forward direction's final state and fed the start symbol
then the target (teacher forcing), Luong "general" attention (keys =
outputs W_a) restricted to the source word being written and biased by a
learned table over the position relative to the letter due (9 buckets,
x10), tanh([context; h] W_c + b_c), a linear readout, cross-entropy over
every target symbol and the end symbol; Adam (lr 0.003), global gradient
norm clipped to 5; batches of 64 windows of 1 to 12 words (at most 100
characters) of one character length, a fifth of the words made up, each
word mirrored.

The batches, their attention masks and bucket indices are made before the
clock starts (charlstm makes its own inside its timed steps), so the
comparison favours PyTorch. Prints one JSON line; `chars_per_second`
counts predicted symbols (target characters and end symbols), as
`charlstm bench --recipe mirror` does.

usage: torch_mirror.py --data text8.zip [--steps 30] [--warmup 5] [--threads 1] [--device cpu|cuda]
"""
import argparse
import json
import time

import numpy as np
import torch

from text8_file import read_text8

VOCAB, START, END, SPACE = 30, 28, 29, 0
EMB, HIDDEN, SPAN, SCALE = 32, 128, 4, 10.0
BATCH, MIN_WORDS, MAX_WORDS, MAX_CHARS = 64, 1, 12, 100
MADE_UP_PROB, MADE_UP_LEN, RUN_PROB = 0.2, 30, 0.2
MASKED = -1e9


def read_text(path):
    raw = read_text8(path)
    return raw[: int(len(raw) * 0.9)].decode("ascii")  # the training part


def batches(text, count, rng):
    """`count` batches of BATCH windows of one character length: (src, tgt)
    lists of ids. As the recipe: a fifth of the words made up (1 to 30
    random letters, a fifth of those a run of one letter), windows over
    MAX_CHARS dropped, the batch's length that of a first random window."""
    words = np.array([w for w in text.split(" ") if w], dtype=object)
    lens = np.array([len(w) for w in words], dtype=np.int64)
    out = []
    while len(out) < count:
        n = 400_000
        w = rng.integers(0, len(words) - MAX_WORDS, n)
        k = rng.integers(MIN_WORDS, MAX_WORDS + 1, n)
        j = np.arange(MAX_WORDS)[None, :]
        used = j < k[:, None]
        made_up = used & (rng.random((n, MAX_WORDS)) < MADE_UP_PROB)
        new_len = rng.integers(1, MADE_UP_LEN + 1, (n, MAX_WORDS))
        word_len = np.where(made_up, new_len, lens[w[:, None] + j])
        lengths = np.where(used, word_len, 0).sum(axis=1) + k - 1
        fits = np.flatnonzero(lengths <= MAX_CHARS)
        same = fits[lengths[fits] == lengths[fits[0]]][:BATCH]
        if same.size < BATCH:
            continue
        src = []
        for i in same:
            sentence = []
            for q in range(k[i]):
                if not made_up[i, q]:
                    sentence.append([ord(c) - 96 for c in words[w[i] + q]])
                elif rng.random() < RUN_PROB:
                    sentence.append([int(rng.integers(1, 27))] * int(new_len[i, q]))
                else:
                    sentence.append(list(rng.integers(1, 27, int(new_len[i, q]))))
            src.append(sentence)
        join = lambda ws: [c for q, wd in enumerate(ws) for c in ([SPACE] if q else []) + wd]
        out.append(([join(s) for s in src], [join([wd[::-1] for wd in s]) for s in src]))
    return out


def locating(src, tgt):
    """Mask and bucket indices [T, S] of one sentence (source with END appended)."""
    s = len(src)
    spans, from_end, first = [], np.zeros(s, dtype=np.int64), 0
    for i, c in enumerate(src):
        if c == SPACE or i + 1 == s:
            from_end[first:i] = np.arange(i - first - 1, -1, -1)
            from_end[i] = i - first
            spans.append((first, i))
            first = i + 1
    word, letter, places = 0, 0, []
    for t in range(len(tgt) + 1):
        places.append((word, letter))
        if t < len(tgt):
            word, letter = (word + 1, 0) if tgt[t] == SPACE else (word, letter + 1)
    w = np.array([min(p[0], len(spans) - 1) for p in places])
    a = np.array([spans[i][0] for i in w])[:, None]
    b = np.array([spans[i][1] for i in w])[:, None]
    pos = np.arange(s)[None, :]
    mask = np.where((pos >= a) & (pos <= b), 0.0, MASKED).astype(np.float32)
    letters = np.array([p[1] for p in places])[:, None]
    bucket = np.clip(from_end[None, :] - letters, -SPAN, SPAN) + SPAN
    return mask, bucket


def tensors(src, tgt):
    src = [s + [END] for s in src]
    mb = [locating(s, t) for s, t in zip(src, tgt)]
    return (
        torch.tensor(src),
        torch.tensor([[START] + t for t in tgt]),
        torch.tensor([t + [END] for t in tgt]),
        torch.from_numpy(np.stack([m for m, _ in mb])),
        torch.from_numpy(np.stack([b for _, b in mb])),
    )


class Mirror(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.src_emb = torch.nn.Embedding(VOCAB, EMB)
        self.tgt_emb = torch.nn.Embedding(VOCAB, EMB)
        self.encoder = torch.nn.LSTM(EMB, HIDDEN, batch_first=True, bidirectional=True)
        self.decoder = torch.nn.LSTM(EMB, HIDDEN, batch_first=True)
        self.score = torch.nn.Linear(2 * HIDDEN, HIDDEN, bias=False)
        self.join = torch.nn.Linear(3 * HIDDEN, HIDDEN)
        self.relative = torch.nn.Parameter(torch.zeros(2 * SPAN + 1))
        self.out = torch.nn.Linear(HIDDEN, VOCAB)

    def forward(self, src, dec_in, mask, bucket):
        enc, (h, c) = self.encoder(self.src_emb(src))  # [b, s, 2H]; h, c [2, b, H]
        dec, _ = self.decoder(self.tgt_emb(dec_in), (h[:1].contiguous(), c[:1].contiguous()))
        scores = dec @ self.score(enc).transpose(1, 2) + mask + SCALE * self.relative[bucket]
        context = torch.softmax(scores, dim=2) @ enc
        hidden = torch.tanh(self.join(torch.cat([context, dec], dim=2)))
        return self.out(hidden)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = [
        tuple(x.to(dev) for x in tensors(s, t))
        for s, t in batches(read_text(a.data), a.warmup + a.steps, rng)
    ]
    model = Mirror().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    t0, chars, loss = None, 0, None
    for step, (src, dec_in, labels, mask, bucket) in enumerate(data):
        if step == a.warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        if t0 is not None:
            chars += labels.numel()
        logits = model(src, dec_in, mask, bucket)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "framework": "pytorch",
        "impl": "nn.LSTM",
        "variant": "mirror",
        "steps": a.steps,
        "train_seconds": round(seconds, 3),
        "chars_per_second": round(chars / seconds, 1),
        "sentences_per_second": round(a.steps * BATCH / seconds, 1),
        "final_loss": round(loss.item(), 4),
        "threads": a.threads,
        "device": a.device,
        "torch_version": torch.__version__,
    }))


if __name__ == "__main__":
    main()
