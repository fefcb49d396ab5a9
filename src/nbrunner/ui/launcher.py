"""The launcher: pick a module, fill a form generated from its parameters, run copies.

Numbers are typed into text boxes rather than number widgets, because number widgets
silently revert bad input; here the user sees exactly why a value is refused, next to the
field, and nothing is submitted until every field is valid.

Each input carries its label as its ipywidgets `description`, which ipywidgets 8 renders as a
`<label for>` tied to the input: screen readers read it, and a click on it focuses the input.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from .. import checks
from ..errors import InvalidParameter, NbrunnerError
from ..modules import ModuleSpec, ParamSpec
from . import text

if TYPE_CHECKING:  # the runner imports the dashboard, not the other way round
    from ..runner import Runner

MAX_COPIES = 100
FIELD_WIDTH = "290px"  # the input's own label (80 px or more) included
SEED = "seed"
FIX_FIELDS = "Fix the highlighted fields; nothing was submitted."


def field_row(
    label: str, control: widgets.DOMWidget, *extras: widgets.Widget, css: str = ""
) -> widgets.HBox:
    """An input labelled by its own <label for> (its description), and what goes beside it;
    the same for parameters and for Module/Priority/Copies."""
    control.description = label
    row = widgets.HBox([control, *extras])
    row.add_class("nbr-field")
    if css:
        row.add_class(css)
    return row


class ParamField:
    """One parameter's input, its inline error and its help line."""

    def __init__(self, spec: ParamSpec, module: str) -> None:
        self.spec = spec
        self.module = module
        self.many = False  # a sweep: the field holds comma-separated values
        self.input = self._make_input()
        self.error = widgets.HTML()
        self.error.add_class("nbr-error")
        self.row = field_row(spec.name, self.input, css=f"nbr-field-{spec.name}")
        help_text = widgets.HTML(f'<div class="nbr-help">{text.escape(self._hint())}</div>')
        self.widget = widgets.VBox([self.row, help_text, self.error])
        self.input.observe(lambda _: self.check(), names="value")

    def _make_input(self) -> widgets.ValueWidget:
        spec = self.spec
        layout = widgets.Layout(width=FIELD_WIDTH)
        if spec.type == "bool":  # its label is beside the box, not in the label column
            return widgets.Checkbox(value=bool(spec.default), layout=layout)
        if spec.type == "choice":
            options = [(str(c), c) for c in spec.choices]
            return widgets.Dropdown(options=options, value=spec.default, layout=layout)
        default = "" if spec.default is None else spec.text(spec.default)
        return widgets.Text(value=default, placeholder=spec.type, layout=layout)

    def _hint(self) -> str:
        spec = self.spec
        bounds = [
            f"min {spec.min}" if spec.min is not None else "",
            f"max {spec.max}" if spec.max is not None else "",
        ]
        parts = [spec.help, spec.type, *bounds]
        return " · ".join(p for p in parts if p)

    @property
    def cleared(self) -> bool:
        """A number box emptied by the user: an error, never a silent default (for an
        optional parameter, empty is None: its flag is left out)."""
        return (
            self.input.value == "" and self.spec.type in ("int", "float") and not self.spec.optional
        )

    @property
    def raw(self) -> Any:
        value = self.input.value
        return None if value == "" and self.spec.type != "str" else value

    def values(self) -> list[Any]:
        """The field's values: one, or in a sweep each comma-separated one."""
        if self.many and isinstance(self.raw, str):
            return [part.strip() for part in self.raw.split(",")]
        return [self.raw]

    def check(self) -> bool:
        """Show the parameter's own error message next to it; True when the value is valid."""
        try:
            if self.raw is None and self.spec.required:
                raise InvalidParameter(f"{self.spec.name} is required ({self.spec.type})")
            if self.cleared:
                raise InvalidParameter(
                    f"{self.spec.name} is empty: type {self.spec.describe()} "
                    f"(its default is {self.spec.default})"
                )
            if self.raw is not None:
                for value in self.values():
                    self.spec.coerce(value, self.module)
        except NbrunnerError as exc:
            self._show_error(text.escape(exc))
            return False
        self._show_error("")
        return True

    def _show_error(self, message: str) -> None:
        """The message under the field, and the field highlighted while it is wrong."""
        self.error.value = message
        css = [c for c in self.row._dom_classes if c != "nbr-invalid"]
        self.row._dom_classes = (*css, "nbr-invalid") if message else tuple(css)


class NumberField:
    """Priority or Copies: a text box checked as a whole number, its error beside it, so
    "2.7" or "1e30" is refused as typed instead of quietly becoming 2 or 1."""

    def __init__(self, label: str, value: int, check: Callable[[str], int], css: str) -> None:
        self._check = check
        self.input = widgets.Text(value=str(value), layout=widgets.Layout(width="170px"))
        self.input.add_class(css)
        self.error = widgets.HTML()
        self.error.add_class("nbr-error")
        self.row = field_row(label, self.input)
        self.widget = widgets.VBox([self.row, self.error])
        self.input.observe(lambda _: self.check(), names="value")

    def add(self, *extras: widgets.Widget) -> None:
        self.row.children = (*self.row.children, *extras)

    def check(self) -> bool:
        try:
            self._check(self.input.value.strip())
        except NbrunnerError as exc:
            self.error.value = text.escape(exc)
            self.row.add_class("nbr-invalid")
            return False
        self.error.value = ""
        self.row.remove_class("nbr-invalid")
        return True

    @property
    def value(self) -> int:
        return self._check(self.input.value.strip())

    @value.setter
    def value(self, number: int) -> None:
        self.input.value = str(number)


def _copies(value: str) -> int:
    return checks.whole_number(value, "copies", 1, MAX_COPIES, InvalidParameter)


class Launcher:
    """Module picker, generated form, priority, copies and the Run button."""

    def __init__(self, runner: Runner, on_submitted: Callable[[list[int]], None]) -> None:
        self.runner = runner
        self.on_submitted = on_submitted
        self.modules: dict[str, ModuleSpec] = runner.modules()
        self._modules_mtime = _mtime(runner.modules_file)
        self._reloading = False
        self.module = widgets.Dropdown(
            options=sorted(self.modules), layout=widgets.Layout(width="256px")
        )
        self.module.add_class("nbr-module-picker")
        self.reload_button = widgets.Button(
            icon="refresh", tooltip="Reload the module list", layout=widgets.Layout(width="28px")
        )
        self.reload_button.add_class("nbr-reload-modules")
        self.reload_button.on_click(lambda _: self.reload_modules())
        self.description = widgets.HTML()
        self.form = widgets.VBox()
        self.priority = NumberField("Priority", 0, checks.priority, "nbr-priority")
        self.copies = NumberField("Copies", 1, _copies, "nbr-copies")
        for number in (self.priority, self.copies):
            self._forget_fixed_fields_on_change(number)
        self.vary_seed = widgets.Checkbox(
            value=False,
            description="vary seed",
            indent=False,
            tooltip="copies get seed, seed+1, seed+2, …",
            layout=widgets.Layout(width="auto"),
        )
        self.vary_seed.add_class("nbr-vary-seed")
        self.sweep = widgets.Checkbox(description="sweep: a,b,c tries each", indent=False)
        self.sweep.add_class("nbr-sweep")
        self.sweep.observe(lambda _: self._set_many(), names="value")
        self.prune = widgets.Text(
            placeholder="metric:max or metric:min",
            tooltip="stop runs behind the sweep's median at the same step",
            layout=widgets.Layout(width="170px"),
        )
        self.prune.add_class("nbr-prune")
        self.prune_row = field_row("Prune", self.prune, css="nbr-prune-row")
        self.prune_row.layout.display = "none"  # shown for sweeps
        self.run_button = widgets.Button(
            description="Run", button_style="primary", layout=widgets.Layout(width="104px")
        )
        self.run_button.add_class("nbr-run-button")
        self.message = widgets.HTML()
        self.message.add_class("nbr-launch-message")
        self.fields: dict[str, ParamField] = {}
        self.module.observe(lambda _: self._reloading or self._build_form(), names="value")
        self.run_button.on_click(lambda _: self.submit())
        self._build_form()
        self.copies.add(self.vary_seed)
        self.copies.row.add_class("nbr-copies-row")
        # the outcome beside the button just clicked, never below the fold
        run_row = widgets.HBox([self.run_button, self.message])
        run_row.add_class("nbr-run-row")
        self.widget = widgets.VBox(
            [
                widgets.HTML("<h3>Launch</h3>"),
                field_row("Module", self.module, self.reload_button),
                self.description,
                self.form,
                self.priority.widget,
                self.sweep,
                self.prune_row,
                self.copies.widget,
                run_row,
            ]
        )
        self.widget.add_class("nbr-panel")
        self.widget.add_class("nbr-launcher")

    def _build_form(self) -> None:
        spec = self.modules.get(self.module.value) if self.module.value else None
        self.fields = {p.name: ParamField(p, spec.name) for p in spec.params} if spec else {}
        for field in self.fields.values():
            field.many = self.sweep.value
            self._forget_fixed_fields_on_change(field)
        self.form.children = tuple(f.widget for f in self.fields.values())
        self.form._dom_classes = ("nbr-form", f"nbr-form-{spec.name}") if spec else ("nbr-form",)
        about = spec.description if spec else "no modules: add some to modules.toml"
        self.description.value = f'<div class="nbr-muted">{text.escape(about)}</div>'
        self.message.value = ""
        self.vary_seed.layout.display = None if self.seed_field() else "none"

    def seed_field(self) -> ParamField | None:
        """The module's integer `seed` parameter, which "vary seed" counts up from."""
        field = self.fields.get(SEED)
        return field if field is not None and field.spec.type == "int" else None

    def modules_file_changed(self) -> bool:
        """Whether modules.toml was written since the list was read (a stat, no query)."""
        return _mtime(self.runner.modules_file) != self._modules_mtime

    def reload_modules(self) -> None:
        """Read the module list again. The chosen module stays chosen while it exists, and
        its form keeps what was typed unless the module's parameters changed."""
        self._modules_mtime = _mtime(self.runner.modules_file)
        modules = self.runner.modules()
        chosen = self.module.value
        before = self.modules.get(chosen) if chosen else None
        self.modules = modules
        self._reloading = True  # setting options selects the first one: not a user's choice
        try:
            if tuple(self.module.options) != tuple(sorted(modules)):
                self.module.options = sorted(modules)
            if chosen in modules:
                self.module.value = chosen
        finally:
            self._reloading = False
        if self.module.value != chosen or modules.get(chosen) != before:
            self._build_form()

    def values(self) -> dict[str, Any]:
        # an optional field left empty is None: its flag is left out, its default not used
        return {n: f.raw for n, f in self.fields.items() if f.raw is not None or f.spec.optional}

    def _set_many(self) -> None:
        self.prune_row.layout.display = None if self.sweep.value else "none"
        for field in self.fields.values():
            field.many = self.sweep.value
            field.check()

    def submit_sweep(self, spec: ModuleSpec) -> list[int]:
        """One run per combination of the fields' values, tagged with one sweep id."""
        grid = {name: f.values() for name, f in self.fields.items() if f.raw is not None}
        prune = self.prune.value.strip() or None  # a bad rule: one line, nothing queued
        sweep = self.runner.sweep(spec.name, grid, priority=self.priority.value, prune=prune)
        self._say("ok", f"Queued sweep {sweep.id}: {len(sweep)} runs of {spec.name}")
        return sweep.ids

    def submit(self) -> list[int]:
        """Validate every field, then queue the copies; returns the new run ids (none on error)."""
        checked = [*self.fields.values(), self.priority, self.copies]
        if not all([f.check() for f in checked]):  # a list: check every field
            self._say("error", FIX_FIELDS)
            return []
        spec = self.modules[self.module.value]
        try:
            if self.sweep.value:
                ids = self.submit_sweep(spec)
                self.on_submitted(ids)
                return ids
            params = spec.validate_params(self.values())
            runs = self.runner.submit_many(
                spec.name, self.params_list(params), priority=self.priority.value
            )
        except NbrunnerError as exc:
            self._say("error", str(exc))
            return []
        ids = [run.id for run in runs]
        label = f"#{ids[0]}" if len(ids) == 1 else f"#{ids[0]}–#{ids[-1]}"
        self._say(
            "ok", f"Queued {len(ids)} run{'s' if len(ids) > 1 else ''} of {spec.name}: {label}"
        )
        self.on_submitted(ids)
        return ids

    def params_list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """One parameter set per copy: the same for all, or seed, seed+1, … with vary seed."""
        copies = self.copies.value
        if not (self.vary_seed.value and self.seed_field()):
            return [params] * copies
        first = int(params.get(SEED) or 0)
        return [{**params, SEED: first + i} for i in range(copies)]

    def _say(self, kind: str, message: str) -> None:
        self.message.value = f'<div class="nbr-{kind}">{text.escape(message)}</div>'

    def _forget_fixed_fields_on_change(self, field: ParamField | NumberField) -> None:
        """Once no field is highlighted, the note asking to fix them goes (after the field's
        own check, which observes first)."""

        def forget(_: object) -> None:
            fields = [*self.fields.values(), self.priority, self.copies]
            if FIX_FIELDS in self.message.value and not any(
                "nbr-invalid" in f.row._dom_classes for f in fields
            ):
                self.message.value = ""

        field.input.observe(forget, names="value")


def _mtime(path: os.PathLike[str] | str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0
