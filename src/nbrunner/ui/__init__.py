"""The dashboard: an ipywidgets app over a Runner, for a JupyterLab cell or a Voila page.

`Runner.dashboard()` returns `Dashboard(runner).widget`; `nbrunner dashboard` serves the
packaged notebook `dashboard.ipynb` with Voila (see `serve`).
"""

from .app import Dashboard, DashboardWidget

__all__ = ["Dashboard", "DashboardWidget"]
