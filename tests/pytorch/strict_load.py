"""Loads tensorgrad's resnet18 / mobilenet-v2 tensors into torchvision's models, and its
resnet20 tensors into the README's ~30-line PyTorch class (run from README.md itself, so
the printed class is the tested one), with load_state_dict(strict=True), and compares the
logits on the same images.

Usage: strict_load.py DIR NAME..., where DIR holds, per model NAME, NAME.safetensors (the model's
tensors, under PyTorch's names), NAME.input.safetensors (tensor "x") and
NAME.logits.safetensors (tensor "logits", tensorgrad's eval-mode output). Prints one
line per model and exits non-zero on any mismatch. Run by tests/torchvision.rs.
"""
import json
import os
import re
import struct
import sys

import torch
import torchvision

DTYPES = {"F32": torch.float32, "F64": torch.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[lo:hi]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


def readme_resnet_cifar():
    """The ResNetCifar class from the README's python block that defines it."""
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
    blocks = re.findall(r"```python\n(.*?)```", open(readme).read(), re.S)
    source = next(b for b in blocks if "class ResNetCifar" in b)
    scope = {}
    exec(source, scope)
    return scope["ResNetCifar"]


def main():
    folder, names = sys.argv[1], sys.argv[2:]
    builders = {
        "resnet18": lambda c, k: torchvision.models.resnet18(num_classes=k),
        "mobilenet-v2": lambda c, k: torchvision.models.mobilenet_v2(num_classes=k),
    }
    for depth in (20, 32, 56):
        builders[f"resnet{depth}"] = lambda c, k, d=depth: readme_resnet_cifar()(d, c, k)
    failed = False
    for name in names:
        state = read_safetensors(f"{folder}/{name}.safetensors")
        x = read_safetensors(f"{folder}/{name}.input.safetensors")["x"]
        ours = read_safetensors(f"{folder}/{name}.logits.safetensors")["logits"]
        model = builders[name](x.shape[1], ours.shape[1])
        model.load_state_dict(state, strict=True)
        model.eval()
        with torch.no_grad():
            theirs = model(x)
        rel = ((theirs - ours).abs().max() / theirs.abs().max()).item()
        ok = rel <= 1e-4
        failed |= not ok
        print(f"{name}: {len(state)} tensors loaded strictly; max |Δlogit| / max |logit| = {rel:.2e} {'ok' if ok else 'MISMATCH'}")
    sys.exit(1 if failed else 0)


main()
