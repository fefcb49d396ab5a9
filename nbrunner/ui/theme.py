"""The dashboard's look: status colours, spacing and the one stylesheet every view relies on.

The stylesheet is shipped as a `<style>` element inside an HTML widget, so the same look
works in a JupyterLab cell and in a Voila page without any front-end extension.
"""

from __future__ import annotations

import ipywidgets as widgets

STATUS_COLOURS: dict[str, str] = {
    "queued": "#6b7280",
    "starting": "#0891b2",
    "running": "#2563eb",
    "paused": "#d97706",
    "succeeded": "#16a34a",
    "failed": "#dc2626",
    "cancelled": "#9333ea",
    "timed_out": "#ea580c",
    "lost": "#4b5563",
}
ACCENT = "#2563eb"

CSS = """
.nbr-app { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  font-size: 13px; color: #111827; gap: 10px; padding: 8px; box-sizing: border-box;
  max-width: 100%; }
.nbr-app .widget-html-content { line-height: 1.4; }
.nbr-app h2, .nbr-app h3 { margin: 0; font-weight: 600; }
.nbr-app h2 { font-size: 18px; }
.nbr-app h3 { font-size: 14px; color: #374151; }
.nbr-muted { color: #6b7280; }
.nbr-row { gap: 6px; align-items: center; }
.nbr-panel { border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px;
  background: #fff; box-sizing: border-box; gap: 8px; }
.nbr-header { align-items: center; gap: 12px; flex-wrap: wrap; }
.nbr-gauges { gap: 8px; flex-wrap: wrap; }
.nbr-gauge { border: 1px solid #e5e7eb; border-radius: 8px; padding: 4px 10px;
  min-width: 150px; background: #f9fafb; }
.nbr-gauge b { font-size: 15px; }
.nbr-gauge .nbr-bar { height: 4px; background: #e5e7eb; border-radius: 2px; margin: 2px 0; }
.nbr-gauge .nbr-bar > div { height: 4px; border-radius: 2px; background: #2563eb; }
.nbr-nogpu { color: #6b7280; font-style: italic; padding: 14px 8px; }
.nbr-body { gap: 10px; align-items: flex-start; }
.nbr-side { width: 320px; flex: 0 0 320px; }
.nbr-main { flex: 1 1 auto; min-width: 0; }
.nbr-field { align-items: center; gap: 6px; }
.nbr-field .widget-label { width: 80px; }
.nbr-error { color: #dc2626; font-size: 12px; }
.nbr-ok { color: #16a34a; font-size: 12px; }
.nbr-help { color: #6b7280; font-size: 11px; margin-left: 86px; margin-top: -4px; }
.nbr-cards { display: grid !important; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr));
  gap: 8px; max-height: 340px; overflow-y: auto; align-content: start; }
.nbr-card { border: 1px solid #e5e7eb; border-left: 4px solid #9ca3af; border-radius: 8px;
  padding: 6px 8px; background: #fff; gap: 2px; }
.nbr-card.nbr-ended { opacity: 0.7; }
.nbr-card .nbr-lastline { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11px;
  color: #374151; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
  background: #f3f4f6; border-radius: 4px; padding: 1px 4px; }
.nbr-card .widget-button, .nbr-hrow .widget-button, .nbr-toolbar .widget-button {
  height: 24px; font-size: 12px; padding: 0 8px; width: auto; }
.nbr-badge { display: inline-block; border-radius: 9px; padding: 0 8px; color: #fff;
  font-size: 11px; font-weight: 600; line-height: 17px; }
.nbr-meta { color: #4b5563; font-size: 12px; }
.nbr-meta span { margin-right: 10px; }
.nbr-toasts { gap: 4px; }
.nbr-toast { border-radius: 6px; padding: 2px 4px 2px 10px; align-items: center;
  color: #fff; width: fit-content; }
.nbr-toast .widget-button { background: transparent; color: #fff; width: 28px; height: 24px; }
.nbr-logbody .widget-html-content { height: 320px; overflow: auto; display: flex;
  flex-direction: column-reverse; background: #0f172a; border-radius: 6px;
  padding: 8px 10px; box-sizing: border-box; }
.nbr-logbody.nbr-nofollow .widget-html-content { flex-direction: column; }
.nbr-logtext { margin: 0; padding: 0; color: #e5e7eb; font-size: 12px;
  font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap;
  overflow-wrap: anywhere; line-height: 1.35; }
.nbr-toolbar { align-items: center; gap: 8px; flex-wrap: wrap; }
.nbr-filters { gap: 6px; flex-wrap: wrap; align-items: center; }
.nbr-filters .widget-label { width: auto; }
.nbr-hcells { display: grid; grid-template-columns: 60px 110px 90px 150px 70px 44px minmax(0, 1fr);
  gap: 8px; align-items: center; font-size: 12px; white-space: nowrap; }
.nbr-hcells > span { overflow: hidden; text-overflow: ellipsis; }
.nbr-hhead { font-weight: 600; color: #374151; border-bottom: 1px solid #e5e7eb;
  padding: 2px 0 4px 0; margin-right: 116px; }
.nbr-hrow { align-items: center; gap: 6px; border-bottom: 1px solid #f3f4f6; }
.nbr-hrow > .widget-html { flex: 1 1 auto; min-width: 0; }
.nbr-chips span { margin: 0 6px 4px 0; }
.nbr-chart td { padding: 1px 6px 1px 0; font-size: 12px; }
"""
CSS += "".join(
    f".nbr-card-{status} {{ border-left-color: {colour}; }}\n"
    f".nbr-toast-{status} {{ background: {colour}; }}\n"
    for status, colour in STATUS_COLOURS.items()
)


def stylesheet() -> widgets.HTML:
    """The stylesheet as a widget; place it once in the app's root."""
    return widgets.HTML(f"<style>{CSS}</style>", layout=widgets.Layout(display="none"))


def status_colour(status: str) -> str:
    return STATUS_COLOURS.get(status, "#6b7280")


def badge(status: str) -> str:
    """A status badge; `status` comes from the RunStatus enum, so it needs no escaping."""
    return (
        f'<span class="nbr-badge nbr-status-{status}" '
        f'style="background:{status_colour(status)}">{status}</span>'
    )
