#!/usr/bin/env python3
"""Where the time of a training step goes, against the limit: for every workload of the
comparison runner and 1 and 2 threads, `tensorgrad bench train-step --profile` times one
step per layer and pass; this script writes each convolution's GFLOP/s next to the square
512³ sgemm rate measured in the same process, and a summary per workload (time in
convolutions by algorithm and pass, the rest of the step).

    python3 benches/compare/layers.py --binary target/release/tensorgrad \
        --out benches/compare/layers-DATE.md

Rates count a convolution's defining multiply-adds (`2 · outputs · c_in/groups · k²`),
whatever the algorithm, so Winograd layers can exceed the sgemm rate.
"""

import argparse
import json
import subprocess
import time
from collections import defaultdict

WORKLOADS = [("lenet", 64), ("cifar-cnn", 128), ("resnet20", 128), ("mobilenet-v2", 128)]


def profile(binary, model, batch, threads, seconds):
    out = subprocess.run(
        [binary, "bench", "train-step", "--model", model, "--batch-size", str(batch),
         "--threads", str(threads), "--seconds", str(seconds), "--profile"],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def algorithm(layer):
    return layer.rsplit(" ", 1)[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="target/release/tensorgrad")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    summary, detail = [], []
    summary.append("| workload | threads | step ms | sgemm GFLOP/s | conv fwd ms (GFLOP/s) | "
                   "conv bwd ms (GFLOP/s) | conv share | by algorithm, fwd+bwd ms (GFLOP/s) |")
    summary.append("|---|---|---|---|---|---|---|---|")
    for model, batch in WORKLOADS:
        for threads in (1, 2):
            r = profile(args.binary, model, batch, threads, args.seconds)
            step_ms = 1e3 * batch / r["images_per_sec"]
            sgemm = r["sgemm_gflops"]
            layers = r["layers"]
            passes = defaultdict(lambda: [0.0, 0.0])
            algos = defaultdict(lambda: [0.0, 0.0])
            for l in layers:
                passes[l["phase"]][0] += l["ms"]
                passes[l["phase"]][1] += l["gflop"]
                algos[algorithm(l["layer"])][0] += l["ms"]
                algos[algorithm(l["layer"])][1] += l["gflop"]
            rate = lambda ms_gf: ms_gf[1] / (ms_gf[0] * 1e-3)
            conv_ms = sum(v[0] for v in passes.values())
            by_algo = ", ".join(f"{a} {v[0]:.1f} ({rate(v):.0f})" for a, v in
                                sorted(algos.items(), key=lambda kv: -kv[1][0]))
            summary.append(
                f"| {model} b{batch} | {threads} | {step_ms:.1f} | {sgemm:.1f} | "
                f"{passes['forward'][0]:.1f} ({rate(passes['forward']):.0f}) | "
                f"{passes['backward'][0]:.1f} ({rate(passes['backward']):.0f}) | "
                f"{100 * conv_ms / step_ms:.0f}% | {by_algo} |")
            detail.append(f"\n### {model} b{batch}, {threads} thread(s): step {step_ms:.1f} ms "
                          f"(timed loop), square sgemm {sgemm:.1f} GFLOP/s\n")
            detail.append("| pass | layer | calls | ms | GFLOP | GFLOP/s | /sgemm |")
            detail.append("|---|---|---|---|---|---|---|")
            for l in layers:
                g = l["gflop"] / (l["ms"] * 1e-3)
                detail.append(f"| {l['phase']} | {l['layer']} | {l['calls']} | {l['ms']:.2f} | "
                              f"{l['gflop']:.3f} | {g:.1f} | {g / sgemm:.2f} |")
            print(summary[-1], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    with open(args.out, "w") as f:
        f.write("# Convolution layers against the sgemm limit\n\n")
        f.write(f"Commit {commit}, {time.strftime('%Y-%m-%d')}, {cpu_model()}.\n\n")
        f.write("Written by `benches/compare/layers.py`: one profiled training step per "
                "workload after the timed loop of `tensorgrad bench train-step --profile`. "
                "GFLOP/s count each convolution's defining multiply-adds, whatever the "
                "algorithm; the step time is the timed loop's.\n\n")
        f.write("\n".join(summary) + "\n")
        f.write("\n".join(detail) + "\n")


if __name__ == "__main__":
    main()
