#!/usr/bin/env python3
"""cuda_compare.py - nnc --device cuda against PyTorch eager on the same GPU.

Train-step throughput (samples/s) of the seed MLP (mnist_mlp, batch 64),
deep_mlp (batch 128) and LeNet (batch 64), each model written in PyTorch as
its .nn file says (same layers, loss, optimizer), on random batches made
before timing; nnc's figure is `nnc bench --device cuda --json`'s. Also a
wide MLP (4096-4096-4096-10, batch 1024) against the FP32 cuBLAS sgemm rate
measured here (torch.matmul with TF32 off). Prints one table; --out DIR also
writes cuda_compare.json there.

usage: bench/cuda_compare.py [--nnc build-cuda/nnc] [--out DIR] [--repeat 5]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WIDE_NN = """model wide_mlp
input  x : f32[N, 4096]
target y : i32[N] classes 10
h1     = dense(x, 4096, act=relu, init=he)
h2     = dense(h1, 4096, act=relu, init=he)
logits = dense(h2, 10)
output probs = softmax(logits)
loss   cross_entropy(logits, y)
train sgd(lr=0.01) batch 1024 epochs 1
"""


class MnistMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.h, self.logits = nn.Linear(784, 10), nn.Linear(10, 10)

    def forward(self, x):
        return self.logits(torch.sigmoid(self.h(x)))


class DeepMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.h1, self.h2, self.logits = nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 10)

    def forward(self, x):
        x = (x - 0.2860) / 0.3530
        return self.logits(F.relu(self.h2(F.relu(self.h1(x)))))


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.h1, self.h2, self.logits = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = (x - 0.2860) / 0.3530
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.logits(F.relu(self.h2(F.relu(self.h1(x.flatten(1))))))


class WideMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.h1, self.h2, self.logits = nn.Linear(4096, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 10)

    def forward(self, x):
        return self.logits(F.relu(self.h2(F.relu(self.h1(x)))))


def torch_rate(model, opt, shape, batch, repeat, seconds=0.3):
    dev = torch.device("cuda")
    x = torch.rand((batch,) + shape, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    rates = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            step().item()  # nnc returns each step's loss to the host too
            n += 1
            if time.perf_counter() - t0 >= seconds:
                break
        rates.append(n * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def nnc_rate(nnc, path, batch, repeat):
    out = subprocess.run([nnc, "bench", path, "--device", "cuda", "--batch", str(batch), "--json", "--repeat",
                          str(repeat)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"nnc bench {path}: {out.stderr.strip()}")
    return json.loads(out.stdout)["train_samples_per_s"]


def sgemm_gflops(n=4096, repeat=5):
    a, b = torch.rand(n, n, device="cuda"), torch.rand(n, n, device="cuda")
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        rates.append(20 * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnc", default=os.path.join(ROOT, "build-cuda", "nnc"))
    ap.add_argument("--out")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gpu = torch.cuda.get_device_name(0)
    rows = []
    cases = [("mnist_mlp", 64, MnistMlp, lambda m: torch.optim.SGD(m.parameters(), lr=0.5), (784,), 3.0),
             ("deep_mlp", 128, DeepMlp, lambda m: torch.optim.Adam(m.parameters(), lr=1e-3), (784,), 1.2),
             ("lenet", 64, LeNet, lambda m: torch.optim.Adam(m.parameters(), lr=2e-3), (1, 28, 28), 1.5)]
    for name, batch, cls, make_opt, shape, target in cases:
        torch.manual_seed(0)
        model = cls().cuda()
        pt = torch_rate(model, make_opt(model), shape, batch, a.repeat)
        ours = nnc_rate(a.nnc, os.path.join(ROOT, "examples", name + ".nn"), batch, a.repeat)
        rows.append({"model": name, "batch": batch, "nnc": ours, "torch": pt, "ratio": ours / pt, "target": target})
    # the wide MLP: achieved GFLOP/s of its step against the sgemm rate
    with tempfile.NamedTemporaryFile("w", suffix=".nn", delete=False) as f:
        f.write(WIDE_NN)
        wide = f.name
    flops_per_sample = 6 * (4096 * 4096 * 2 + 4096 * 10)  # forward 2, backward 4 per weight
    ours = nnc_rate(a.nnc, wide, 1024, a.repeat)
    os.unlink(wide)
    sgemm = sgemm_gflops()
    wide_gflops = ours * flops_per_sample / 1e9
    print(f"GPU: {gpu}; train step samples/s, median of {a.repeat}; PyTorch {torch.__version__} eager, FP32")
    print(f"{'model':<10} {'batch':>5} {'nnc':>12} {'PyTorch':>12} {'ratio':>7} {'target':>7}")
    for r in rows:
        ok = "ok" if r["ratio"] >= r["target"] else "below"
        print(f"{r['model']:<10} {r['batch']:>5} {r['nnc']:>12.0f} {r['torch']:>12.0f} {r['ratio']:>6.2f}x "
              f"{r['target']:>6.1f}x {ok}")
    print(f"wide_mlp   1024: {ours:.0f} samples/s = {wide_gflops:.0f} GFLOP/s, "
          f"{100 * wide_gflops / sgemm:.0f} % of sgemm's {sgemm:.0f} GFLOP/s (target 80 %)")
    if a.out:
        with open(os.path.join(a.out, "cuda_compare.json"), "w") as f:
            json.dump({"gpu": gpu, "rows": rows, "wide_gflops": wide_gflops, "sgemm_gflops": sgemm}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
