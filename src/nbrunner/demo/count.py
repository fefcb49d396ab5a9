"""Count to n, one line per step: the smallest module that shows live logs."""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--label", default="count")
    parser.add_argument("--exit-code", dest="exit_code", type=int, default=0)
    args = parser.parse_args()
    for i in range(1, args.n + 1):
        print(f"{args.label} {i}/{args.n}", flush=True)
        time.sleep(args.delay)
    raise SystemExit(args.exit_code)


if __name__ == "__main__":
    main()
