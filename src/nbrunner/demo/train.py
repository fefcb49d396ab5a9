"""A pretend training loop: tqdm-style progress bars, coloured epoch summaries, and a loss
and an accuracy reported with `nbrunner.report` (so history --metric, scalars, Compare and
sweeps can be tried on it: a learning rate near 3e-3 and the large model do best)."""

from __future__ import annotations

import argparse
import math
import random
import sys
import time

from nbrunner import report

GREEN, YELLOW, RESET = "\x1b[32m", "\x1b[33m", "\x1b[0m"


def progress(epoch: int, epochs: int, step: int, steps: int, loss: float) -> str:
    """One line, the outer count first: the dashboard reads the run's progress from it."""
    filled = int(20 * step / steps)
    bar = "█" * filled + " " * (20 - filled)
    return (
        f"\repoch {epoch}/{epochs}: {100 * step // steps:3d}%|{bar}| {step}/{steps} loss={loss:.4f}"
    )


def accuracy_after(epoch: int, lr: float, arch: str) -> float:
    """Rises with the epochs, fastest near lr=3e-3; the large model ends higher."""
    speed = 0.5 * math.exp(-((math.log10(max(lr, 1e-9)) - math.log10(3e-3)) ** 2))
    ceiling = 0.97 if arch == "large" else 0.93
    return ceiling - (ceiling - 0.1) * math.exp(-epoch * speed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--arch", choices=["small", "large"], default="small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step_time", type=float, default=0.1)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.epochs * 1000 + args.steps)
    print(f"{YELLOW}training {args.arch} model, lr={args.lr}, {args.epochs} epochs{RESET}")
    loss = 2.5
    for epoch in range(1, args.epochs + 1):
        for step in range(1, args.steps + 1):
            loss = loss * (1 - min(args.lr * 20, 0.5) / args.steps) + rng.uniform(0, 0.01)
            report(step=(epoch - 1) * args.steps + step, loss=loss)
            sys.stdout.write(progress(epoch, args.epochs, step, args.steps, loss))
            sys.stdout.flush()
            time.sleep(args.step_time)
        accuracy = accuracy_after(epoch, args.lr, args.arch)
        report(step=epoch * args.steps, accuracy=accuracy)
        print(f"\n{GREEN}epoch {epoch} done{RESET}: loss={loss:.4f} accuracy={accuracy:.3f}")
    if args.fail:
        print("simulated failure: the loss diverged", file=sys.stderr)
        raise SystemExit(1)
    print("training finished")


if __name__ == "__main__":
    main()
