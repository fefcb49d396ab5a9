"""Header gauges: CPU, memory and every GPU, each with a sparkline of the last minutes."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets

from ..gpu import GpuSample
from ..monitor import SystemSample
from . import text
from .sync import Sync
from .theme import ACCENT

SPARK_WIDTH, SPARK_HEIGHT = 130, 22
SPARK_SECONDS = 300


def sparkline(values: Sequence[float], top: float = 100.0, colour: str = ACCENT) -> str:
    """An inline SVG polyline of values in [0, top]; made of numbers only, so it is safe."""
    if len(values) < 2:
        return f'<svg width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" style="display:block"></svg>'
    step = SPARK_WIDTH / (len(values) - 1)
    scale = (SPARK_HEIGHT - 2) / (top or 1.0)
    points = " ".join(
        f"{i * step:.1f},{SPARK_HEIGHT - 1 - min(max(v, 0.0), top) * scale:.1f}"
        for i, v in enumerate(values)
    )
    return (
        f'<svg width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" style="display:block">'
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/></svg>'
    )


def gauge_html(title: str, value: str, fraction: float | None, detail: str, spark: str) -> str:
    width = 0.0 if fraction is None else min(max(fraction, 0.0), 1.0) * 100
    return (
        f'<div class="nbr-gauge"><span class="nbr-muted">{text.escape(title)}</span> '
        f"<b>{value}</b> <span class='nbr-muted'>{detail}</span>"
        f'<div class="nbr-bar"><div style="width:{width:.0f}%"></div></div>{spark}</div>'
    )


def cpu_gauge(history: Sequence[SystemSample]) -> str:
    latest = history[-1]
    return gauge_html(
        "CPU",
        text.percent(latest.cpu_percent),
        latest.cpu_percent / 100,
        f"{len(latest.per_core)} cores",
        sparkline([s.cpu_percent for s in history]),
    )


def memory_gauge(history: Sequence[SystemSample]) -> str:
    latest = history[-1]
    return gauge_html(
        "Memory",
        text.percent(latest.memory_percent),
        latest.memory_percent / 100,
        f"{text.size(latest.memory_used)} / {text.size(latest.memory_total)}",
        sparkline([s.memory_percent for s in history], colour="#7c3aed"),
    )


def gpu_gauge(gpu: GpuSample, history: Sequence[SystemSample]) -> str:
    utilisation = [_gpu_util(s.gpus, gpu.index) for s in history]
    memory = (
        f"{text.size(gpu.memory_used)} / {text.size(gpu.memory_total)}"
        if gpu.memory_used is not None
        else f"? / {text.size(gpu.memory_total)}"
    )
    extras = [
        memory,
        f"{gpu.temperature:.0f}°C" if gpu.temperature is not None else "",
        f"{gpu.power_w:.0f} W" if gpu.power_w is not None else "",
    ]
    return gauge_html(
        f"GPU {gpu.index} {gpu.name}",
        text.percent(gpu.utilization),
        None if gpu.utilization is None else gpu.utilization / 100,
        text.escape(" · ".join(e for e in extras if e)),
        sparkline([u for u in utilisation if u is not None], colour="#059669"),
    )


def _gpu_util(gpus: Sequence[GpuSample], index: int) -> float | None:
    return next((g.utilization for g in gpus if g.index == index), None)


def no_gpu_html(status: str) -> str:
    message = status if status.startswith("no GPU detected") else f"no GPU detected ({status})"
    return f'<div class="nbr-nogpu">{text.escape(message or "no GPU detected")}</div>'


def gauges_html(history: Sequence[SystemSample]) -> list[str]:
    """One HTML block per gauge, newest sample last in `history`."""
    latest = history[-1]
    blocks = [cpu_gauge(history), memory_gauge(history)]
    if latest.gpus:
        blocks += [gpu_gauge(gpu, history) for gpu in latest.gpus]
    else:
        blocks.append(no_gpu_html(latest.gpu_status))
    return blocks


class GaugesView:
    """A row of gauges that redraws only when the sampler has a new sample."""

    def __init__(self, sync: Sync) -> None:
        self.sync = sync
        self.widget = widgets.HBox()
        self.widget.add_class("nbr-gauges")
        self._blocks: list[widgets.HTML] = []
        self._last_time = 0.0

    def update(self, history: Sequence[SystemSample]) -> None:
        if not history or history[-1].time == self._last_time:
            return
        self._last_time = history[-1].time
        blocks = gauges_html(history)
        while len(self._blocks) < len(blocks):
            self._blocks.append(widgets.HTML())
        for widget, block in zip(self._blocks, blocks, strict=False):
            self.sync.set(widget, value=block)
        self.sync.set(self.widget, children=tuple(self._blocks[: len(blocks)]))
