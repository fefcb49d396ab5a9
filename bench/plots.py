"""PNG plots for RESULTS.md (matplotlib, drawn off-screen)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .harness import Figure


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_plot(out_dir: Path, name: str, title: str, figures: Sequence[Figure]) -> str:
    """Grouped bars, one group per figure, one bar per variant (median, min–max whiskers)."""
    plt = _pyplot()
    variants = list(dict.fromkeys(v for fig in figures for v in fig.samples))
    width = 0.8 / max(1, len(variants))
    fig_, ax = plt.subplots(figsize=(8, 4.5))
    for i, variant in enumerate(variants):
        xs, medians, lows, highs = [], [], [], []
        for g, fig in enumerate(figures):
            if variant in fig.samples:
                low, high = fig.spread(variant)
                xs.append(g + (i - (len(variants) - 1) / 2) * width)
                medians.append(fig.median(variant))
                lows.append(fig.median(variant) - low)
                highs.append(high - fig.median(variant))
        ax.bar(xs, medians, width, yerr=[lows, highs], label=variant, capsize=3)
    ax.set_xticks(range(len(figures)), [f.label.replace("`", "") for f in figures])
    ax.set_yscale("log")
    ax.set_ylabel(figures[0].unit if figures else "")
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig_.tight_layout()
    fig_.savefig(out_dir / name, dpi=100)
    plt.close(fig_)
    return name


def line_plot(
    out_dir: Path,
    name: str,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    xlabel: str,
    ylabel: str,
) -> str:
    """One line of (x, y) points per series, with markers."""
    plt = _pyplot()
    fig_, ax = plt.subplots(figsize=(8, 4.5))
    for label, points in series.items():
        ordered = sorted(points)
        ax.plot([x for x, _ in ordered], [y for _, y in ordered], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig_.tight_layout()
    fig_.savefig(out_dir / name, dpi=100)
    plt.close(fig_)
    return name
