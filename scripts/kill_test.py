#!/usr/bin/env python3
"""Kill test: SIGKILL `tensorgrad train` at random moments and check that nothing is lost.

Each trial starts a short run, kills it after a random delay (anywhere from data loading to
the last checkpoint write), then checks that the newest checkpoint loads (`tensorgrad
eval`), that `--resume` finishes the run, and that the final `model.safetensors` is byte
for byte the file an uninterrupted run writes. A trial killed before its first checkpoint
must leave no checkpoint (never a partial one) and is restarted with --force.

    cargo build --release && python3 scripts/kill_test.py [--trials 50] [--seed 0]
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tensorgrad")
# One step per epoch and a larger model (a ~7 MB checkpoint with its momentum): most of a
# run's time is spent writing checkpoints, so many kills land inside a write.
RUN = ["--model", "cifar-cnn", "--epochs", "12", "--train-limit", "64", "--test-limit", "64",
       "--threads", "2", "--quiet"]


def train(*args, check=True):
    return subprocess.run([BIN, "train", *args], capture_output=True, text=True, check=check)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    opts = p.parse_args()
    rng = random.Random(opts.seed)
    work = tempfile.mkdtemp(prefix="tensorgrad-kill-")
    ref = os.path.join(work, "reference")
    t0 = time.time()
    train(*RUN, "--out", ref)
    length = time.time() - t0
    want = open(os.path.join(ref, "model.safetensors"), "rb").read()
    outcomes = {}
    failures = []
    for trial in range(opts.trials):
        out = os.path.join(work, f"trial{trial}")
        proc = subprocess.Popen([BIN, "train", *RUN, "--out", out],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, length * 1.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ck = os.path.join(out, "model.safetensors")
        in_write = any(f.endswith(".tmp") for f in os.listdir(out)) if os.path.isdir(out) else False
        if in_write:
            outcomes["  of which inside a file write (a .tmp was left)"] = \
                outcomes.get("  of which inside a file write (a .tmp was left)", 0) + 1
        if proc.returncode == 0:
            outcome = "finished before the kill"
        elif not os.path.exists(ck):
            outcome = "killed before the first checkpoint"
            train(*RUN, "--out", out, "--force")
        else:
            outcome = "killed after a checkpoint"
            ev = subprocess.run([BIN, "eval", "--checkpoint", out], capture_output=True, text=True)
            if ev.returncode != 0:
                failures.append((trial, "eval of the newest checkpoint failed: " + ev.stderr.strip()))
            res = train("--resume", out, check=False)
            if res.returncode != 0:
                failures.append((trial, "resume failed: " + res.stderr.strip()))
        tmp_left = [f for f in os.listdir(out) if f.endswith(".tmp")]
        if tmp_left:
            failures.append((trial, f"temporary files left after resume: {tmp_left}"))
        if open(ck, "rb").read() != want:
            failures.append((trial, "final model.safetensors differs from the uninterrupted run"))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        shutil.rmtree(out)
    shutil.rmtree(work)
    print(f"{opts.trials} trials (a run takes {length:.1f} s):")
    for k, v in sorted(outcomes.items()):
        print(f"  {v:3d}  {k}")
    for trial, why in failures:
        print(f"  FAILED trial {trial}: {why}")
    print("all final checkpoints byte-identical to the uninterrupted run" if not failures
          else f"{len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
