"""`python -m bench [--quick] [--output DIR] [--only NAME,...] [--no-ray]`."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from . import BENCHMARKS
from .context import Context
from .harness import BENCH_DIR, CACHE_ENV, Section, compile_nbrunner, stop_services
from .machine import describe
from .peers import find_peers
from .report import (
    console_table,
    load_sections,
    results_markdown,
    save_sections,
    write_results,
)

RESULTS_JSON = "results.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat (~2 min)")
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCH_DIR,
        help="where RESULTS.md and plots go (default: bench/)",
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--no-ray", action="store_true", help="leave Ray Jobs out even if installed"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    args.chosen = chosen
    return args


def run_one(name: str, ctx: Context) -> Section:
    started = time.perf_counter()
    print(f"-- {name} ...", flush=True)
    try:
        section: Section = importlib.import_module(f"bench.{name}").run(ctx)
    except Exception as exc:  # one failing benchmark must not lose the others' results
        traceback.print_exc()
        section = Section(name, name, "", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    section.seconds = time.perf_counter() - started
    section.measured_at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"   {name}: {section.seconds:.0f} s", flush=True)
    return section


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    peers = find_peers()
    for peer in peers.values():
        found = (
            f"found: {peer.version}" if peer.found else f"not found; install with: {peer.install}"
        )
        print(f"peer {peer.name}: {found}", flush=True)
    out_dir = args.output.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    compile_nbrunner()
    cache = Path(tempfile.mkdtemp(prefix="nbb-cache-"))
    os.environ[CACHE_ENV] = str(cache)
    ctx = Context(args.quick, out_dir, peers, use_ray=not args.no_ray)
    started = time.perf_counter()
    try:
        sections = [run_one(name, ctx) for name in args.chosen]
    finally:
        ctx.close()
        stop_services(cache)
        shutil.rmtree(cache, ignore_errors=True)
    if args.only:  # keep the other benchmarks' sections from the last full results
        earlier = load_sections(out_dir / RESULTS_JSON)
        fresh = {section.name: section for section in sections}
        sections = [fresh.get(n) or earlier[n] for n in BENCHMARKS if n in fresh or n in earlier]
    save_sections(out_dir / RESULTS_JSON, sections)
    machine = describe(peers)
    machine["run time"] = f"{time.perf_counter() - started:.0f} s" + (
        f" (of which starting the Ray head: {ctx.ray_start_seconds:.0f} s)"
        if ctx.ray_start_seconds
        else ""
    )
    command = "python -m bench" + (" --quick" if args.quick else "")
    write_results(out_dir / "RESULTS.md", results_markdown(sections, machine, args.quick, command))
    print(console_table(sections))
    print(f"\nwrote {out_dir / 'RESULTS.md'}")
    return 1 if any(section.error for section in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
