"""Check the real GPU path on a machine with NVIDIA GPUs: one command, plain output.

    python scripts/gpu_probe.py [--seconds 5]

It goes through the same code nbrunner uses (nbrunner.gpu's NVML source, the system
sampler, the admission capacity), so what it prints is what the scheduler and the dashboard
see. Without a driver it says so and exits 0: that is the supported "no GPU" path.
"""

from __future__ import annotations

import argparse
import os
import time

from nbrunner.gpu import INVENTORY_ENV, NvmlGpus
from nbrunner.monitor import SystemSampler
from nbrunner.resources import format_size, machine_capacity


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to sample")
    args = parser.parse_args()
    if os.environ.pop(INVENTORY_ENV, None):
        print(f"note: ignoring {INVENTORY_ENV}; this probe looks at the real GPUs")
    source = NvmlGpus()
    print(f"NVML: {source.reason}")
    for device in source.devices():
        print(
            f"  GPU {device.index}: {device.name} {device.uuid} {format_size(device.memory_total)}"
        )
    capacity = machine_capacity()
    print(
        f"admission sees: {capacity.cpus} CPUs, {format_size(capacity.memory_total)} memory, "
        f"{len(capacity.devices)} GPU(s)"
    )
    sampler = SystemSampler.shared().acquire()
    started = time.perf_counter()
    time.sleep(args.seconds)
    sampler.release()
    samples = sampler.history()
    print(f"{len(samples)} system samples in {time.perf_counter() - started:.1f} s")
    for sample in samples[-3:]:
        gpus = (
            "; ".join(
                f"GPU {g.index} util {g.utilization}% mem {format_size(g.memory_used)}/"
                f"{format_size(g.memory_total)} temp {g.temperature} C power {g.power_w} W "
                f"procs {len(g.processes)}"
                for g in sample.gpus
            )
            or sample.gpu_status
        )
        print(f"  cpu {sample.cpu_percent:.0f}% mem {sample.memory_percent:.0f}% | {gpus}")
    calls = 50
    begin = time.perf_counter()
    for _ in range(calls):
        source.sample()
    print(f"one GPU sample costs {1000 * (time.perf_counter() - begin) / calls:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
