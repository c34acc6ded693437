#!/usr/bin/env python3
"""Same-run comparison of tensorgrad and PyTorch on this machine.

Alternates the two (A B A B …) for every workload and thread count, so that drift of the
machine's speed hits both alike, and prints the median images/s of each, their min–max,
and the median ratio tensorgrad / PyTorch as a markdown table (also written as JSON).

    python3 benches/compare/run.py [--rounds 5] [--seconds 4] [--threads 1,2] [--out FILE]

PyTorch comes from PyPI into a virtual environment outside the repository
(`$TORCH_VENV`, default ../torch-venv), created on first use; tensorgrad itself never
depends on Python.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.environ.get("TORCH_VENV", os.path.join(os.path.dirname(ROOT), "torch-venv"))
PY = os.path.join(VENV, "bin", "python")
TG = os.path.join(ROOT, "target", "release", "tensorgrad")
TORCH = os.path.join(ROOT, "benches", "compare", "torch_bench.py")
WORKLOADS = [("train-step", "lenet", 64), ("train-step", "cifar-cnn", 128),
             ("train-step", "resnet20", 128), ("train-step", "mobilenet-v2", 128),
             ("infer", "lenet", 64), ("infer", "cifar-cnn", 128),
             ("infer", "resnet20", 128), ("infer", "mobilenet-v2", 128),
             # The rest of the zoo, train step only (resnet18 at its native 64×64).
             ("train-step", "resnet32", 128), ("train-step", "resnet56", 128),
             ("train-step", "resnet18", 128)]


def ensure_torch():
    if not os.path.exists(PY):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    if subprocess.run([PY, "-c", "import torch, torchvision"], capture_output=True).returncode != 0:
        subprocess.run([PY, "-m", "pip", "install", "-q", "torch", "torchvision", "numpy"],
                       check=True)


def measure(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_sec"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--out", default=None)
    p.add_argument("--models", default=None,
                   help="comma-separated subset of the workloads' models (default: all)")
    a = p.parse_args()
    wanted = set(a.models.split(",")) if a.models else None
    ensure_torch()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    torch_version = subprocess.run([PY, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True).stdout.strip()
    results = []
    for mode, model, batch in WORKLOADS:
        if wanted and model not in wanted:
            continue
        for threads in [int(t) for t in a.threads.split(",")]:
            common = [mode, "--model", model, "--batch-size", str(batch),
                      "--threads", str(threads), "--seconds", str(a.seconds)]
            tg, pt = [], []
            for _ in range(a.rounds):
                tg.append(measure([TG, "bench", *common]))
                pt.append(measure([PY, TORCH, *common]))
            ratios = [x / y for x, y in zip(tg, pt)]
            row = {"mode": mode, "model": model, "batch_size": batch, "threads": threads,
                   "tensorgrad": tg, "pytorch": pt, "ratio_median": statistics.median(ratios)}
            results.append(row)
            print(f"{mode} {model} b{batch} {threads}t: ratio {row['ratio_median']:.2f}",
                  file=sys.stderr)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "unknown CPU")
    print(f"{time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores, PyTorch {torch_version}, "
          f"{a.rounds} alternating rounds of {a.seconds:g} s, images/s (median, min–max)\n")
    print("| workload | threads | tensorgrad | PyTorch | ratio |")
    print("|---|---|---|---|---|")
    for r in results:
        fmt = lambda v: f"{statistics.median(v):,.0f} ({min(v):,.0f}–{max(v):,.0f})"
        print(f"| {r['mode']} {r['model']} b{r['batch_size']} | {r['threads']} | "
              f"{fmt(r['tensorgrad'])} | {fmt(r['pytorch'])} | {r['ratio_median']:.2f}× |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"torch_version": torch_version, "cpu": cpu, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
