#!/usr/bin/env python3
"""PyTorch side of the comparison: the same models, loss, optimizer and JSON line as
`tensorgrad bench` (random N(0,1) inputs, 10 classes, SGD momentum 0.9, lr 0.01, weight decay
5e-4 on weights only, softmax cross-entropy; warm-up, then a timed loop).

    python torch_bench.py train-step|infer --model lenet|cifar-cnn|linear|resnet20|resnet32|resnet56|resnet18|mobilenet-v2 \\
        --batch-size N --threads T [--seconds S] [--variant eager|channels-last|compile]
    python torch_bench.py suite --workloads train-step:lenet:64,infer:lenet:64,… --threads T \\
        [--seconds S] [--variant …]

Variants, as PyTorch's CPU performance guide configures it: `eager` (NCHW, the default),
`channels-last` (model and inputs in `torch.channels_last` memory format) and `compile`
(`torch.compile`, inductor on the CPU, channels-last too). The guide's third advice, a
better allocator, is the runner's business: it preloads tcmalloc into a channels-last
process. `suite` runs several workloads in one process, one JSON line each, so that every
variant is warmed the same way (a process that only runs inference is about half as fast
as one that has trained first: glibc's heap).

resnet20/32/56 are the README's `ResNetCifar` class (read from README.md, the one
tests/torchvision.rs loads tensorgrad's checkpoints into); resnet18 (at 64×64) and
mobilenet-v2 (at 32×32) are torchvision's.
"""
import argparse
import json
import os
import re
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet(nn.Module):
    def __init__(self, c=1, classes=10):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class CifarCnn(nn.Module):
    def __init__(self, c=3, classes=10):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1)
        self.conv3, self.conv4 = nn.Conv2d(32, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(64 * 8 * 8, 256), nn.Linear(256, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.max_pool2d(F.relu(self.conv4(F.relu(self.conv3(x)))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class Linear(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.fc = nn.Linear(28 * 28, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def readme_resnet_cifar():
    """The ResNetCifar class from the README's python block that defines it."""
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
    blocks = re.findall(r"```python\n(.*?)```", open(readme).read(), re.S)
    scope = {}
    exec(next(b for b in blocks if "class ResNetCifar" in b), scope)
    return scope["ResNetCifar"]


def resnet20():
    return readme_resnet_cifar()(20, 3, 10)


def resnet32():
    return readme_resnet_cifar()(32, 3, 10)


def resnet56():
    return readme_resnet_cifar()(56, 3, 10)


def resnet18():
    import torchvision
    return torchvision.models.resnet18(num_classes=10)


def mobilenet_v2():
    import torchvision
    return torchvision.models.mobilenet_v2(num_classes=10)


MODELS = {
    "lenet": (LeNet, (1, 28, 28)),
    "cifar-cnn": (CifarCnn, (3, 32, 32)),
    "linear": (Linear, (1, 28, 28)),
    "resnet20": (resnet20, (3, 32, 32)),
    "resnet32": (resnet32, (3, 32, 32)),
    "resnet56": (resnet56, (3, 32, 32)),
    "resnet18": (resnet18, (3, 64, 64)),
    "mobilenet-v2": (mobilenet_v2, (3, 32, 32)),
}


def measure(mode, model_name, batch_size, threads, seconds, variant):
    """Images/s of `mode` on a fresh model of `model_name`, as one JSON-able dict."""
    torch.manual_seed(0)
    cls, shape = MODELS[model_name]
    model = cls()
    x = torch.randn(batch_size, *shape)
    y = torch.randint(0, 10, (batch_size,))
    if variant in ("channels-last", "compile"):
        model = model.to(memory_format=torch.channels_last)
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
    decay = [q for q in model.parameters() if q.ndim > 1]
    no_decay = [q for q in model.parameters() if q.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}], lr=0.01, momentum=0.9)
    run = torch.compile(model) if variant == "compile" else model

    def step():
        if mode == "train-step":
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(run(x), y).backward()
            opt.step()
        else:
            with torch.no_grad():
                run(x).softmax(-1)

    if mode == "infer":
        model.eval()
    # Warm-up: at least 2 steps and 0.5 s (torch.compile compiles in the first steps).
    t = time.perf_counter()
    n = 0
    while n < 3 or time.perf_counter() - t < 0.5:
        step()
        n += 1
    t0, steps = time.perf_counter(), 0
    while steps == 0 or time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - t0
    return {"mode": mode, "model": model_name, "batch_size": batch_size, "threads": threads,
            "images_per_sec": steps * batch_size / elapsed, "steps": steps, "seconds": elapsed,
            "framework": "pytorch", "variant": variant, "torch_version": torch.__version__,
            "tcmalloc": "tcmalloc" in os.environ.get("LD_PRELOAD", "")}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["train-step", "infer", "suite"])
    p.add_argument("--model", default="lenet", choices=list(MODELS))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workloads", default="",
                   help="suite: comma-separated MODE:MODEL:BATCH, run in this order")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--variant", default="eager", choices=["eager", "channels-last", "compile"])
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.mode == "suite":
        work = [w.split(":") for w in a.workloads.split(",") if w]
    else:
        work = [(a.mode, a.model, a.batch_size)]
    for mode, model_name, batch in work:
        reset_peak_rss()
        row = measure(mode, model_name, int(batch), a.threads, a.seconds, a.variant)
        row["peak_rss_kb"] = peak_rss_kb()
        print(json.dumps(row), flush=True)


def reset_peak_rss():
    """Resets this process's peak resident set to its current size (Linux), so that each
    workload of a suite reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_kb():
    """The peak resident set since the last reset, in KiB (Linux's VmHWM)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


if __name__ == "__main__":
    main()
