"""The benchmark suite runs end to end in quick mode and writes a well-formed results file.

No timings are asserted: the machine is shared and the figures are the benchmark's business.
The results go to a temporary directory, never over the committed bench/RESULTS.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import BENCHMARKS
from bench.harness import Figure, Section, Target, interleave, linear_fit, percentile
from bench.peers import free_ports
from bench.report import SECTION_MARK, results_markdown

REPO = Path(__file__).resolve().parent.parent


def test_interleave_runs_variants_in_rounds() -> None:
    order: list[str] = []

    def variant(name: str) -> dict[str, float]:
        order.append(name)
        return {"value": float(len(order))}

    results = interleave({"a": lambda: variant("a"), "b": lambda: variant("b")}, 3)
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert [m["value"] for m in results["b"]] == [2.0, 4.0, 6.0]


def test_statistics() -> None:
    slope, intercept, r2 = linear_fit([1, 10, 50, 100], [12, 30, 110, 210])
    assert slope == pytest.approx(2.0)
    assert intercept == pytest.approx(10.0)
    assert r2 == pytest.approx(1.0)
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99


def test_free_ports_for_a_ray_head_are_distinct() -> None:
    """Ports picked one socket at a time (each closed before the next) repeat now and then;
    among 400, almost surely: a Ray head given one port twice refuses to start."""
    ports = free_ports(400)
    assert len(set(ports)) == len(ports) == 400


def test_report_shows_ratios_and_missed_targets() -> None:
    section = Section("demo", "Demo", "How it was measured.")
    fig = section.figure("runs/s", "runs/s", higher_is_better=True)
    for value in (10.0, 12.0, 11.0):
        fig.add("nbrunner", value)
        fig.add("floor", 2 * value)
    section.targets.append(Target("≥ 0.5× the floor", "0.50×", False, "because"))
    text = results_markdown([section], {"cpu": "test"}, quick=True, command="python -m bench")
    assert SECTION_MARK.format(name="demo") in text
    assert "| runs/s | floor | 22.0 runs/s | 20.0 – 24.0 | 3 | 0.50× |" in text
    assert "**missed**" in text and "Why: because" in text
    assert Figure("x", "ms").median() != Figure("x", "ms").median()  # NaN when empty


@pytest.mark.timeout(900)
def test_quick_run_writes_every_section(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = (tmp_path / "RESULTS.md").read_text()
    assert results.startswith("# nbrunner benchmarks: results")
    for heading in ("## Machine", "## Targets at a glance", "| python |", "| nbrunner |"):
        assert heading in results
    for name in BENCHMARKS:
        marker = SECTION_MARK.format(name=name)
        assert marker in results, f"no section for {name}"
        body = results.split(marker, 1)[1].split("<!-- section:", 1)[0]
        assert "This benchmark failed" not in body, body
        assert "| Figure | Variant | Median |" in body, f"{name} has no figures"
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", results):
        assert (tmp_path / image).stat().st_size > 0
    assert {"launch_throughput.png", "memory_vs_runs.png"} <= {p.name for p in tmp_path.iterdir()}
