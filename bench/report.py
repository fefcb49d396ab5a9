"""The table printed at the end of a run, and RESULTS.md."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

from .harness import Figure, Section, Target

SECTION_MARK = "<!-- section: {name} -->"


def number(value: float) -> str:
    if math.isnan(value):
        return "—"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratio(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}×"


def status(target: Target) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[target.met]


def figure_rows(fig: Figure) -> list[list[str]]:
    """One row per variant: median, spread, repeats, and the subject's ratio to it."""
    rows = []
    for variant in fig.samples:
        low, high = fig.spread(variant)
        is_subject = variant == fig.subject
        rows.append(
            [
                fig.label,
                f"**{variant}**" if is_subject else variant,
                f"{number(fig.median(variant))} {fig.unit}",
                f"{number(low)} – {number(high)}",
                str(len(fig.samples[variant])),
                "" if is_subject else ratio(fig.ratio(variant)),
            ]
        )
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


FIGURE_HEADER = ("Figure", "Variant", "Median", "Spread (min – max)", "n", "Subject ÷ variant")


def section_markdown(section: Section) -> list[str]:
    lines = [SECTION_MARK.format(name=section.name), f"## {section.title}", ""]
    if section.error:
        return [*lines, f"**This benchmark failed:** `{section.error}`", ""]
    lines += [section.method, ""]
    rows = [row for fig in section.figures for row in figure_rows(fig)]
    lines += [*markdown_table(FIGURE_HEADER, rows), ""]
    lines += [f"- {note}" for note in section.notes]
    when = f", measured {section.measured_at}" if section.measured_at else ""
    lines += [f"- Took {section.seconds:.0f} s{when}.", ""]
    if section.targets:
        lines += ["**Targets**", ""]
        for target in section.targets:
            lines.append(f"- {target.text}: {target.measured} — {status(target)}.")
            if target.met is False and target.why:
                lines.append(f"  Why: {target.why}")
        lines.append("")
    lines += [f"![{name}]({name})" for name in section.plots]
    return [*lines, ""] if section.plots else lines


def summary_markdown(sections: Sequence[Section]) -> list[str]:
    rows = [
        [section.title, target.text, target.measured, status(target)]
        for section in sections
        for target in section.targets
    ]
    return [
        "## Targets at a glance",
        "",
        *markdown_table(("Benchmark", "Target", "Measured", ""), rows),
        "",
    ]


def results_markdown(
    sections: Sequence[Section], machine: dict[str, str], quick: bool, command: str
) -> str:
    lines = [
        "# nbrunner benchmarks: results",
        "",
        f"Written by `{command}`"
        + (" (**quick mode**: smaller sizes, fewer repeats — a smoke test)" if quick else "")
        + ". Every figure is the median over interleaved repeats, with its min – max spread;",
        "*Subject ÷ variant* is nbrunner's median divided by that row's (a floor or a peer):",
        "above 1 means nbrunner's figure is larger. See `bench/README.md` for what each",
        "benchmark does and how to rerun it.",
        "",
        "## Machine",
        "",
        *markdown_table(("", ""), [[key, value] for key, value in machine.items()]),
        "",
        *summary_markdown(sections),
    ]
    for section in sections:
        lines += section_markdown(section)
    return "\n".join(lines).rstrip() + "\n"


def write_results(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def save_sections(path: Path, sections: Sequence[Section]) -> None:
    path.write_text(json.dumps([dataclasses.asdict(s) for s in sections], indent=1) + "\n")


def load_sections(path: Path) -> dict[str, Section]:
    """Sections of an earlier run (results.json), by name; none if there is no such file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {item["name"]: Section.from_dict(item) for item in data}


def console_table(sections: Sequence[Section]) -> str:
    """A plain-text table: one line per variant of each figure, then the targets."""
    lines = []
    for section in sections:
        lines.append(f"\n{section.title}  ({section.seconds:.0f} s)")
        if section.error:
            lines.append(f"  FAILED: {section.error}")
            continue
        for fig in section.figures:
            for label, variant, med, spread, n, rat in figure_rows(fig):
                name = variant.strip("*")[:36]
                lines.append(f"  {label[:44]:44} {name:36} {med:>18}  [{spread}] n={n} {rat}")
        for target in section.targets:
            lines.append(
                f"  target: {target.text}: {target.measured} — {status(target).strip('*')}"
            )
    return "\n".join(lines)
