"""A pretend training loop: tqdm-style progress bars, coloured epoch summaries, a loss curve."""

from __future__ import annotations

import argparse
import math
import random
import sys
import time

GREEN, YELLOW, RESET = "\x1b[32m", "\x1b[33m", "\x1b[0m"


def progress(epoch: int, epochs: int, step: int, steps: int, loss: float) -> str:
    """One line, the outer count first: the dashboard reads the run's progress from it."""
    filled = int(20 * step / steps)
    bar = "█" * filled + " " * (20 - filled)
    return (
        f"\repoch {epoch}/{epochs}: {100 * step // steps:3d}%|{bar}| {step}/{steps} loss={loss:.4f}"
    )


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
            sys.stdout.write(progress(epoch, args.epochs, step, args.steps, loss))
            sys.stdout.flush()
            time.sleep(args.step_time)
        accuracy = 1 - math.exp(-epoch / 2) * 0.9
        print(f"\n{GREEN}epoch {epoch} done{RESET}: loss={loss:.4f} accuracy={accuracy:.3f}")
    if args.fail:
        print("simulated failure: the loss diverged", file=sys.stderr)
        raise SystemExit(1)
    print("training finished")


if __name__ == "__main__":
    main()
