"""nbrunner's benchmarks, side by side with floors and peers: `python -m bench`.

One module per benchmark, each with `run(context) -> Section`; `harness` holds what they
share (isolated measurement processes, interleaving, statistics), `report` writes RESULTS.md.
"""

from __future__ import annotations

BENCHMARKS = (
    "launch",
    "submit",
    "logs",
    "memory",
    "monitoring",
    "dashboard",
    "cancel",
    "notebook",
    "metrics",
    "pruning",
    "idle_page",
    "idle_runs",
    "designs",
)
