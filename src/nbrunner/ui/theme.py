"""The dashboard's look: status colours, spacing and the one stylesheet every view relies on.

The stylesheet is shipped as a `<style>` element inside an HTML widget, so the same look
works in a JupyterLab cell and in a Voila page without any front-end extension. Every
surface and text colour is one of JupyterLab's theme variables (Voila defines them too,
light or dark with `?theme=dark`), with a light fallback; only the status colours are
fixed, and they always carry white text on their own background, each at least 4.5:1 against
it (WCAG AA for text).

When the kernel behind the widgets is gone (restarted, culled), ipywidgets marks each view
`jupyter-widgets-disconnected`; the stylesheet, which stays in the page, then hides the
dead dashboard and says what to do instead.
"""

from __future__ import annotations

import ipywidgets as widgets

STATUS_COLOURS: dict[str, str] = {
    "queued": "#6b7280",
    "starting": "#0e7490",
    "running": "#2563eb",
    "paused": "#b45309",
    "succeeded": "#15803d",
    "failed": "#dc2626",
    "cancelled": "#9333ea",
    "timed_out": "#c2410c",
    "lost": "#4b5563",
    "pruned": "#0d9488",  # a sweep stopped it early: neither a failure nor your cancel
}
ACCENT = "#2563eb"
GONE_MESSAGE = "This dashboard's kernel is gone: re-run the cell (or reload the page)."

# JupyterLab's variables, each with the light theme's value for pages that lack them
TEXT = "var(--jp-ui-font-color1, rgba(0, 0, 0, 0.87))"
MUTED = "var(--jp-ui-font-color2, rgba(0, 0, 0, 0.54))"
SURFACE = "var(--jp-layout-color1, #fff)"
SUNKEN = "var(--jp-layout-color2, #eee)"
BORDER = "var(--jp-border-color2, #e0e0e0)"
RULE = "var(--jp-border-color3, #eee)"
BRAND = "var(--jp-brand-color1, #1976d2)"
BRAND_SOFT = "var(--jp-brand-color3, #bbdefb)"
ERROR = "var(--jp-error-color1, #d32f2f)"
OK = "var(--jp-success-color1, #388e3c)"  # a mark beside text, never the text itself
MONO = "var(--jp-code-font-family, ui-monospace, Menlo, Consolas, monospace)"
ROW_PX = 28

CSS = f"""
.nbr-app {{ font-family: var(--jp-ui-font-family, system-ui, sans-serif);
  font-size: 13px; color: {TEXT}; gap: 10px; padding: 8px; box-sizing: border-box;
  max-width: 100%; container-type: inline-size; }}
/* Narrower than a launcher beside cards and a history table can share (1024 px windows,
   a JupyterLab cell): the launcher and summary go on top, side by side. */
@container (max-width: 1100px) {{
  .nbr-app .nbr-body {{ flex-direction: column; align-items: stretch; }}
  .nbr-app .nbr-side {{ width: 100%; flex: none; flex-direction: row; flex-wrap: wrap;
    align-items: flex-start; }}
  .nbr-app .nbr-side > * {{ flex: 1 1 320px; }}
}}
.nbr-app .widget-html-content {{ line-height: 1.4; color: {TEXT}; }}
.nbr-app h2, .nbr-app h3 {{ margin: 0; font-weight: 600; color: {TEXT}; }}
.nbr-app h2 {{ font-size: 18px; }}
.nbr-app h3 {{ font-size: 14px; }}
.nbr-muted {{ color: {MUTED}; }}
.nbr-row {{ gap: 6px; align-items: center; }}
.nbr-panel {{ border: 1px solid {BORDER}; border-radius: 8px; padding: 10px;
  background: {SURFACE}; box-sizing: border-box; gap: 8px; }}
.nbr-header {{ align-items: center; gap: 12px; flex-wrap: wrap; }}
.nbr-gauges {{ gap: 8px; flex-wrap: wrap; }}
.nbr-gauge {{ border: 1px solid {BORDER}; border-radius: 8px; padding: 4px 10px;
  min-width: 150px; background: {SUNKEN}; white-space: nowrap; }}
.nbr-gauge b {{ font-size: 15px; }}
.nbr-bar, .nbr-progress-track {{ height: 4px; background: {BORDER}; border-radius: 2px;
  margin: 2px 0; overflow: hidden; }}
.nbr-bar > div, .nbr-progress-track > div {{ height: 4px; border-radius: 2px;
  background: {BRAND}; }}
.nbr-nogpu {{ color: {MUTED}; font-style: italic; padding: 14px 8px; }}
.nbr-body {{ gap: 10px; align-items: flex-start; }}
.nbr-side {{ width: 320px; flex: 0 0 320px; gap: 10px; }}
.nbr-main {{ flex: 1 1 auto; min-width: 0; gap: 10px; }}
.nbr-field {{ align-items: center; gap: 6px; margin: 0; flex-wrap: wrap; }}
.nbr-field .widget-label {{ flex: 0 0 auto; width: auto; min-width: 80px; max-width: 45%;
  margin: 0 6px 0 0; text-align: left; white-space: normal; overflow: visible;
  text-overflow: clip; overflow-wrap: anywhere; line-height: 1.2; }}
.nbr-field > .widget-inline-hbox, .nbr-field > .widget-text, .nbr-field > .widget-dropdown,
.nbr-field > .widget-checkbox {{ margin: 0; }}
.nbr-invalid input, .nbr-invalid select {{ border-color: {ERROR} !important;
  box-shadow: 0 0 0 1px {ERROR}; }}
.nbr-invalid .widget-label {{ color: {ERROR}; font-weight: 600; }}
.nbr-app .nbr-error, .nbr-app .nbr-error .widget-html-content {{ color: {ERROR};
  font-size: 12px; }}
.nbr-run-row {{ align-items: center; gap: 8px; flex-wrap: wrap; }}
.nbr-app .nbr-ok {{ color: {TEXT}; font-size: 12px; }}
.nbr-ok::before {{ content: "✓ "; color: {OK}; font-weight: 700; }}
.nbr-help {{ color: {MUTED}; font-size: 11px; margin-left: 86px; margin-top: -4px; }}
.nbr-cards {{ display: grid !important;
  grid-template-columns: repeat(auto-fill, minmax(280px, 1fr));
  gap: 8px; max-height: 360px; overflow-y: auto; align-content: start; }}
.nbr-card {{ border: 1px solid {BORDER}; border-left: 4px solid #9ca3af; border-radius: 8px;
  padding: 6px 8px; background: {SURFACE}; gap: 2px; }}
.nbr-card.nbr-ended {{ border-style: dashed; }}
/* A card's text fits its box: the HTML widget may shrink, long text ends in "…" */
.nbr-card .widget-html, .nbr-card .widget-html-content {{ min-width: 0; max-width: 100%;
  flex: 1 1 auto; }}
.nbr-card .widget-html-content > div {{ min-width: 0; overflow: hidden; }}
.nbr-card .nbr-lastline {{ font-family: {MONO}; font-size: 11px; color: {TEXT};
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
  background: {SUNKEN}; border-radius: 4px; padding: 1px 4px; }}
.nbr-card .nbr-params {{ font-size: 11px; color: {MUTED}; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }}
.nbr-progress {{ display: flex; align-items: center; gap: 6px; font-size: 11px;
  color: {MUTED}; white-space: nowrap; min-width: 0; }}
.nbr-progress-track {{ flex: 1 1 40px; min-width: 24px; }}
.nbr-progress-label {{ flex: none; }}
.nbr-app .widget-button {{ height: 24px; font-size: 12px; padding: 0 8px; }}
.nbr-card .widget-button, .nbr-toolbar .widget-button {{ width: auto; }}
.nbr-badge {{ display: inline-block; border-radius: 9px; padding: 0 8px; color: #fff;
  font-size: 11px; font-weight: 600; line-height: 17px; }}
.nbr-meta {{ color: {MUTED}; font-size: 12px; display: flex; flex-wrap: wrap;
  column-gap: 10px; }}
.nbr-meta span {{ white-space: nowrap; }}
/* Toasts and notices float over the page's corner: nothing under the pointer moves. */
.nbr-overlay {{ position: fixed; top: 8px; right: 8px; z-index: 1000; gap: 4px;
  max-width: min(480px, 90vw); align-items: flex-end; pointer-events: none; }}
.nbr-overlay > * {{ pointer-events: auto; }}
.nbr-notice:empty, .nbr-notice .widget-html-content:empty {{ display: none; }}
.nbr-notice .widget-html-content {{ background: {SURFACE}; border: 1px solid {BORDER};
  border-radius: 6px; padding: 2px 10px; box-shadow: 0 2px 8px rgba(0, 0, 0, 0.25); }}
.nbr-toasts {{ gap: 4px; align-items: flex-end; }}
.nbr-toast {{ border-radius: 6px; padding: 2px 4px 2px 10px; align-items: center;
  color: #fff; width: fit-content; max-width: 100%; gap: 6px; }}
.nbr-toast .widget-html-content {{ color: #fff; }}
.nbr-toast .widget-button.nbr-dismiss {{ background: transparent; color: #fff; width: 24px;
  min-width: 24px; height: 24px; padding: 0; font-size: 16px; line-height: 24px;
  overflow: visible; text-overflow: clip; box-shadow: none; }}
/* Follow: a column-reverse scroller starts at its end and keeps the end in view as lines
   arrive (Chromium's scrollTop is then 0 at the bottom); the text must not shrink to the
   box (nor scroll itself, as JupyterLab's pre does), or it is the text that scrolls. */
/* Follow on pins the newest lines (nothing to scroll, so nothing drifts); Follow off
   freezes the text where it is and lets it scroll. The direction never changes, so
   turning Follow off keeps the view where it was. */
.nbr-logbody .widget-html-content {{ height: 320px; overflow: hidden; display: flex;
  flex-direction: column-reverse; background: #0f172a; border-radius: 6px;
  padding: 8px 10px; box-sizing: border-box; }}
.nbr-logbody.nbr-nofollow .widget-html-content {{ overflow: auto; }}
.nbr-logtext {{ flex: none; overflow: visible; margin: 0; padding: 0; color: #e5e7eb;
  font-size: 12px; font-family: {MONO}; white-space: pre-wrap; overflow-wrap: anywhere;
  line-height: 1.35; }}
.nbr-toolbar {{ align-items: center; gap: 8px; flex-wrap: wrap; }}
.nbr-filters {{ gap: 6px; flex-wrap: wrap; align-items: center; }}
.nbr-filters .widget-label {{ width: auto; }}
.nbr-hgrid {{ align-items: flex-start; gap: 6px; overflow: hidden; width: 100%; }}
.nbr-htable-box {{ flex: 1 1 auto; min-width: 0; margin: 0; overflow: hidden; }}
.nbr-htable {{ width: 100%; table-layout: fixed; border-collapse: collapse;
  font-size: 12px; color: {TEXT}; }}
.nbr-app .nbr-htable th, .nbr-app .nbr-htable td {{ height: {ROW_PX}px;
  max-height: {ROW_PX}px; padding: 0 6px 0 0 !important; box-sizing: border-box;
  line-height: {ROW_PX - 2}px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; text-align: left; vertical-align: middle;
  border: none; border-bottom: 1px solid {RULE}; }}
.nbr-htable th {{ font-weight: 600; color: {MUTED}; border-bottom-color: {BORDER}; }}
/* Columns whose text has a known width get it in px (ids up to 5 digits, the longest
   status badge, HH:MM:SS); module and params share what is left. */
.nbr-htable .nbr-c-id {{ width: 52px; }} .nbr-htable .nbr-c-module {{ width: 18%; }}
.nbr-htable .nbr-c-status {{ width: 86px; }} .nbr-htable .nbr-c-submitted {{ width: 80px; }}
.nbr-htable .nbr-c-duration {{ width: 68px; }} .nbr-htable .nbr-c-exit {{ width: 38px; }}
.nbr-htable .nbr-c-progress {{ width: 110px; }} .nbr-htable .nbr-c-detail {{ width: auto; }}
.nbr-htable .nbr-badge {{ padding: 0 6px; max-width: 100%; box-sizing: border-box;
  overflow: hidden; text-overflow: ellipsis; vertical-align: middle; }}
.nbr-htable .nbr-progress-track {{ flex: 0 0 28px; }}
.nbr-htable .nbr-progress-label {{ flex: 0 1 auto; min-width: 0; overflow: hidden;
  text-overflow: ellipsis; }}
.nbr-hactions {{ flex: 0 0 auto; margin: 0; padding-top: {ROW_PX}px; }}
.nbr-hactions-row {{ height: {ROW_PX}px; align-items: center; gap: 4px; margin: 0; }}
.nbr-hactions-row .widget-button {{ height: 22px; line-height: 22px; margin: 0; }}
.nbr-hactions-row .nbr-hview {{ width: 48px; }}
.nbr-hactions-row .nbr-hrestart {{ width: 62px; }}
.nbr-chips span {{ margin: 0 6px 4px 0; white-space: nowrap; }}
.nbr-chart td {{ padding: 1px 6px 1px 0; font-size: 12px; white-space: nowrap; }}
.nbr-chart svg {{ display: block; }}
.nbr-app.jupyter-widgets-disconnected > * {{ display: none !important; }}
.nbr-app.jupyter-widgets-disconnected::before {{ display: none; }}
.nbr-app.jupyter-widgets-disconnected::after {{ content: "{GONE_MESSAGE}"; display: block;
  padding: 12px; border: 1px dashed {ERROR}; border-radius: 8px; color: {ERROR};
  font-weight: 600; }}
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
