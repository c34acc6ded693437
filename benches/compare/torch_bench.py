#!/usr/bin/env python3
"""PyTorch side of the comparison: the same models, loss, optimizer and JSON line as
`tensorgrad bench` (random N(0,1) inputs, 10 classes, SGD momentum 0.9, lr 0.01, weight decay
5e-4 on weights only, softmax cross-entropy; warm-up, then a timed loop).

    python torch_bench.py train-step|infer --model lenet|cifar-cnn|linear|resnet20|resnet32|resnet56|resnet18|mobilenet-v2 \\
        --batch-size N --threads T [--seconds S]

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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["train-step", "infer"])
    p.add_argument("--model", default="lenet", choices=list(MODELS))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cls, shape = MODELS[a.model]
    model = cls()
    x = torch.randn(a.batch_size, *shape)
    y = torch.randint(0, 10, (a.batch_size,))
    decay = [q for q in model.parameters() if q.ndim > 1]
    no_decay = [q for q in model.parameters() if q.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}], lr=0.01, momentum=0.9)

    def step():
        if a.mode == "train-step":
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        else:
            with torch.no_grad():
                model(x).softmax(-1)

    if a.mode == "infer":
        model.eval()
    t = time.perf_counter()
    n = 0
    while n < 2 or time.perf_counter() - t < 0.5:
        step()
        n += 1
    t0, steps = time.perf_counter(), 0
    while steps == 0 or time.perf_counter() - t0 < a.seconds:
        step()
        steps += 1
    seconds = time.perf_counter() - t0
    print(json.dumps({"mode": a.mode, "model": a.model, "batch_size": a.batch_size,
                      "threads": a.threads, "images_per_sec": steps * a.batch_size / seconds,
                      "steps": steps, "seconds": seconds, "framework": "pytorch",
                      "torch_version": torch.__version__}))


if __name__ == "__main__":
    main()
