"""A notebook run's log tab links to its executed notebook: saved from the browser, or opened
from the path shown (the file lies beside the run's log, `logs/ID.ipynb`)."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import ipywidgets as widgets

from ..models import RunRecord
from . import text
from .sync import Sync

DOWNLOAD_MAX_BYTES = 20 * 1024 * 1024


def notebook_link(path: str, run_id: int) -> str:
    """The executed notebook as a data: link the browser saves as `run-ID.ipynb`."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return '<span class="nbr-muted">no executed notebook yet</span>'
    where = f"<span class='nbr-muted'>{text.escape(path)}</span>"
    if size > DOWNLOAD_MAX_BYTES:
        return f"<span class='nbr-muted'>{text.size(size)}: open it from</span> {where}"
    with open(path, "rb") as f:
        encoded = base64.b64encode(f.read()).decode("ascii")
    return (
        f'<a class="nbr-notebook-link" download="run-{run_id}.ipynb" '
        f'href="data:application/x-ipynb+json;base64,{encoded}">Save run-{run_id}.ipynb</a> '
        f"{where}"
    )


def notebook_widgets(
    record: RunRecord, sync: Sync, request: Callable[[Callable[[], None]], None]
) -> list[widgets.Widget]:
    """A "Notebook" button and the link it fills in, for a notebook run; none for others."""
    path = record.notebook_path
    if path is None:
        return []
    link = widgets.HTML()
    button = widgets.Button(description="Notebook", tooltip="the executed notebook, with outputs")
    button.add_class("nbr-notebook")
    button.on_click(lambda _: request(lambda: sync.set(link, value=notebook_link(path, record.id))))
    return [button, link]
